"""Constants shared by the SaliencyCut modules and the labeller's configuration (no heavy imports)."""

#: The GrabCut engines SaliencyCut can run: Cheng's own, or OpenCV's ``cv2.grabCut``.
CUT_ENGINES = ("faithful", "opencv")
#: The foreground thresholds SaliencyCut tries, in order, until a cut succeeds.
T2_VALUES = (0.9, 0.7, 0.5, 0.3)
