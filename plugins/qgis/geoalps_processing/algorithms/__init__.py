"""The Processing algorithms, one module each; all are thin wrappers over one geoalps command."""
from .autolabel import AutoLabelAlgorithm
from .predict import PredictAlgorithm

ALGORITHMS = (AutoLabelAlgorithm, PredictAlgorithm)
