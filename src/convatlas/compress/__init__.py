"""convatlas.compress"""
