"""convatlas.ops"""
