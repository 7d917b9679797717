"""convatlas.models.sequence"""
