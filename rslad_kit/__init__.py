"""rslad-kit: adversarial robustness distillation (RSLAD, ICCV'21) for the classroom and the lab."""

__version__ = "0.1.0"

from rslad_kit.errors import UserError

__all__ = ["UserError", "__version__"]
