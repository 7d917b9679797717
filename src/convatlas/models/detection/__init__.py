"""convatlas.models.detection: object detectors (SSDLite, ...) built on registered backbones."""
