"""Models that travel: Hugging Face Mamba checkpoints in and out, and this toolkit's model directories.

Between the commands and the model library (tests/test_import_graph.py): imports rom.models, rom.data
(tokenizers) and rom.eval (finding a run's tokenizer); transformers is never imported here (only its file
format is read and written), huggingface_hub only to download a repo id.
"""

from rom.interop.hf_mamba import (InteropError, hf_config_from_model, load_hf_mamba, model_config_from_hf,
                                  state_dict_from_hf, state_dict_to_hf)
from rom.interop.pretrained import export_run, import_hf, load_pretrained, save_pretrained

__all__ = ["InteropError", "load_hf_mamba", "load_pretrained", "save_pretrained", "import_hf", "export_run",
           "model_config_from_hf", "hf_config_from_model", "state_dict_from_hf", "state_dict_to_hf"]
