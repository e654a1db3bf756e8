"""``imgcls bench``: the in-process engine sweep (:mod:`.inprocess`), HTTP load (:mod:`.http`), and the pick that
writes the bundle's serving profile (:mod:`.pick`). Torch-free, like predict and serve."""
