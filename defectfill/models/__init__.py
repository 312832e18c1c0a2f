"""Model code: DefectFill, its components and the offline base model."""
