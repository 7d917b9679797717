"""convatlas.models.generative"""
