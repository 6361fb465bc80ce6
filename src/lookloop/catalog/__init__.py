"""The product catalogue: the data sets it is imported from, and the service that keeps it."""

from lookloop.catalog.dataset import GroceryDataset, LabelledImage, grocery_catalog, load_catalog_file
from lookloop.catalog.service import Catalogue

__all__ = ["Catalogue", "GroceryDataset", "LabelledImage", "grocery_catalog", "load_catalog_file"]
