"""convatlas.models.audio"""
