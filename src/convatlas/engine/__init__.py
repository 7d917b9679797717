"""convatlas.engine"""
