"""convatlas.models.segmentation"""
