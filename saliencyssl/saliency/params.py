"""Constants of the labeller's configuration shared by the SaliencyCut modules and the stages (no heavy imports)."""

#: The GrabCut engines SaliencyCut can run: Cheng's own, or OpenCV's ``cv2.grabCut``.
CUT_ENGINES = ("faithful", "opencv")
#: The foreground thresholds SaliencyCut tries, in order, until a cut succeeds.
T2_VALUES = (0.9, 0.7, 0.5, 0.3)
#: The labeller options a user sets (the rest of :class:`~saliencyssl.saliency.LabellerConfig` keeps
#: Cheng's defaults): what the stages take, a grid config's ``labeller`` section and a run record hold.
LABELLER_OPTIONS = ("min_side", "scale", "max_side", "cut_engine")


def describe_params(params: dict | None) -> str:
    """The working-size options and cut engine of recorded labeller parameters, for messages
    (``"min_side=64, scale=None, max_side=None, cut_engine=faithful"``)."""
    if not params:
        return "parameters unknown"
    return ", ".join(f"{k}={params.get(k)}" for k in LABELLER_OPTIONS if k in params)
