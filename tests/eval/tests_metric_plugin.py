"""A custom metric as a user would write one: `eval.metric: tests_metric_plugin:length_ratio`."""


def length_ratio(predictions, references):
    return {"length_ratio": sum(len(p) / len(r) for p, r in zip(predictions, references)) / len(references)}
