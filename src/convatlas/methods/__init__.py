"""convatlas.methods"""
