# top-1 on val of the identify model the service serves (iconic images + all train labels)
import tempfile, numpy as np
from pathlib import Path
from lookloop.config import Settings, get_settings
from lookloop.service import Lookloop
from lookloop.catalog import GroceryDataset
base = get_settings(); tmp = tempfile.mkdtemp()
s = Settings(var_dir=Path(tmp), data_dir=base.data_dir, model_dir=base.model_cache_dir)
sy = Lookloop(s); sy.migrate(); sy.import_grocery(s.grocery_dir); sy.build_identify()
val = GroceryDataset(s.grocery_dir).split("val")
x = sy.embedding_cache.embed_files([v.path for v in val], sy.embedder.embed)
preds = sy.identify_model.predict(x)
print("top1_val", np.mean([p.top[0] == v.label for p, v in zip(preds, val)]), "n", len(val))
