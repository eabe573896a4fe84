"""Language models built from a layer pattern (see rom.models.lm)."""

from rom.models.lm import LanguageModel, LMOutput, build_model

__all__ = ["LanguageModel", "LMOutput", "build_model"]
