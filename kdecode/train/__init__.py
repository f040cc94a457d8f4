"""Training and evaluation of the restoring decoders.

``data``: images -> luma -> JPEG at quality q (Pillow) -> coefficients read back by kdecode ->
the float planes models see, and random 8-aligned patches of them on the training device.
``loop``: the resumable training loop (``kdecode train``). ``evaluate``: the papers' protocol
(``kdecode eval``). ``cli``: the two commands.
"""
