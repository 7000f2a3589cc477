"""Imitation learning for Tamiyo (the `[imitation]` extra): recorded episodes and behaviour cloning.

* `agents.imitation.dataset` records any policy's episodes on an Esper id as a Minari
  dataset (resumable: episodes already recorded, by seed, are not run again).
* `agents.imitation.clone` clones such a dataset onto the zoo's recurrent policies
  (`recurrent_ppo`, `maskable_recurrent_ppo`) and saves a normal SB3 `.zip`.

Both import Minari firmly, so import them directly, not from here.
"""
