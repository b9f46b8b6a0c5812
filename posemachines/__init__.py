"""posemachines: Pose Machines and Convolutional Pose Machines behind one interface.

The public surface (see the README's "Python" section)::

    load_dataset(name, split, ...)          -> PoseDataset
    train(backend, dataset, out=None, **options)  -> PoseModel (saved in out, as pm train)
    load_model(path, runtime="torch")       -> PoseModel (a model directory, .onnx or zoo name)
    export_onnx(model, path, int8=False)    -> path (CNN stages only)
    PoseModel.predict(images or dataset)    -> Predictions (keypoints per stage)
    PoseModel.save(path)
    predict_people(model, images, people= or boxes=) -> [[Person, ...] per image]
    load_people_model(path)                 -> PeopleModel (finds people: .detect(images))
    evaluate(model, dataset, record=False)  -> EvaluationResult (record: as pm evaluate)
    compare(entries, dataset)               -> report folder
    TestTimeAugmentation(flip, scales)
    register_backend(name, settings=, trainer=, stages=)   (see docs/design.md)
    register_dataset(name, splits=, load=, splits_present=)

Names are imported on first use, so ``import posemachines`` stays light (and never imports
torch).
"""

__version__ = "0.1.0"

_PUBLIC = {
    "load_dataset": "posemachines.data",
    "DataRequest": "posemachines.data",
    "train": "posemachines.api",
    "evaluate": "posemachines.api",
    "compare": "posemachines.api",
    "predict_people": "posemachines.api",
    "export_onnx": "posemachines.onnx.export",
    "load_people_model": "posemachines.backends.people.model",
    "load_model": "posemachines.loading",
    "PoseModel": "posemachines.core.model",
    "Predictions": "posemachines.core.model",
    "TestTimeAugmentation": "posemachines.core.tta",
    "PoseMachinesError": "posemachines.errors",
    "register_backend": "posemachines.registry",
    "register_dataset": "posemachines.data",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'posemachines' has no attribute {name!r}")
