"""The Processing algorithms, one module each: thin wrappers over one geoalps command, and the
installer that sets up the environment they run in."""
from .autolabel import AutoLabelAlgorithm
from .classgallery import ClassGalleryAlgorithm
from .evaluate import EvaluateAlgorithm
from .install import InstallGeoAlpsAlgorithm
from .nameclasses import NameClassesAlgorithm
from .predict import PredictAlgorithm
from .train import PretrainAlgorithm, TrainAlgorithm

ALGORITHMS = (AutoLabelAlgorithm, ClassGalleryAlgorithm, NameClassesAlgorithm, EvaluateAlgorithm, PretrainAlgorithm,
              TrainAlgorithm, PredictAlgorithm, InstallGeoAlpsAlgorithm)
