"""convatlas.models.science"""
