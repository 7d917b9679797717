"""convatlas.models.restoration"""
