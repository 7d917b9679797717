"""convatlas.analysis"""
