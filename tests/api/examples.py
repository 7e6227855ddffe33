"""Valid example specs (the quickstart: iris, 3 annotators), camelCase as in YAML."""

DATASET = {
    "sources": [
        {
            "uri": "s3://loom-examples/quickstart/iris.csv",
            "format": "csv",
            "provenance": {
                "owner": "data-platform",
                "license": "CC-BY-4.0",
                "consent": "public-domain-dataset",
                "collectedAt": "1936-01-01T00:00:00Z",
                "description": "Fisher's iris measurements (150 flowers, 3 species).",
            },
        }
    ],
    "idColumn": "id",
    "split": {"strategy": "random", "seed": 42, "train": 0.7, "validation": 0.15, "test": 0.15},
}

LABELJOB = {
    "datasetRef": {"name": "iris"},
    "annotations": [{"uri": "s3://loom-examples/quickstart/annotations.csv", "format": "csv"}],
    "labelColumn": "label",
    "agreementMetric": "auto",
    "minAgreement": 0.6,
    "adjudication": "majority",
}

TRAININGRUN = {
    "labelJobRef": {"name": "iris-labels"},
    "model": {"type": "mlp", "hiddenUnits": 16},
    "hyperparameters": {"epochs": 30, "learningRate": 0.05, "batchSize": 32, "seed": 0},
    "workers": 1,
}

EVALUATION = {
    "trainingRunRef": {"name": "iris-mlp"},
    "thresholds": [
        {"metric": "accuracy", "min": 0.8},
        {"metric": "f1_macro", "min": 0.8},
    ],
}

DEPLOYMENT = {
    "evaluationRef": {"name": "iris-mlp-eval"},
    "canary": {"steps": [10, 50], "progressDeadlineSeconds": 120},
    "analysis": {"interval": 10, "failureLimit": 2,
                 "metrics": [{"name": "error-rate", "thresholdRange": {"max": 1}},
                             {"name": "latency-p99", "thresholdRange": {"max": 500}}]},
}

SPECS = {
    "Dataset": DATASET,
    "LabelJob": LABELJOB,
    "TrainingRun": TRAININGRUN,
    "Evaluation": EVALUATION,
    "Deployment": DEPLOYMENT,
}
