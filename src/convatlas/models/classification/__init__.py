"""convatlas.models.classification"""
