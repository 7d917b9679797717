"""convatlas.models.graph"""
