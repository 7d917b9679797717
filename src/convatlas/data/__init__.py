"""convatlas.data"""
