"""convatlas.models"""
