"""The engine end to end on generated data: an image generator and the ``zslr demo`` pipeline.

    gen = generate_dataset("out", seed=0, images_per_class=30)   # folders + CSV + unseen.txt
    report = run_demo(DemoConfig(out=Path("zslr-demo")))          # zslr demo
"""
from .generator import ATTRIBUTE_NAMES, VOCABULARY, ClassSpec, GeneratedDataset, generate_dataset
from .pipeline import DemoConfig, DemoReport, format_report, run_demo

__all__ = ["ATTRIBUTE_NAMES", "VOCABULARY", "ClassSpec", "DemoConfig", "DemoReport", "GeneratedDataset",
           "format_report", "generate_dataset", "run_demo"]
