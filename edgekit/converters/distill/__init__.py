"""Knowledge distillation: train a smaller student to compute what its teacher computes (see ``run``)."""

from edgekit.converters.distill.options import DistillOptions, DistillResult
from edgekit.converters.distill.run import DistillFilesResult, distill, distill_files

__all__ = ["DistillFilesResult", "DistillOptions", "DistillResult", "distill", "distill_files"]
