"""Checks that a checkpoint, as its reader maps it, holds what the config describes.

Above the readers (they import `export.weights` for the canonical names; this module imports a
reader's interface): the pre-flight validation and the verifier both call it before reading any
weight.
"""

from __future__ import annotations

from export.checkpoints.base import TRANSPOSE, CheckpointReader, HeadCandidate
from export.config import BertConfig
from export.errors import InputError, listing
from export.tasks import DEFAULT_MAX_ANSWER_LENGTH, HEAD_BIAS, HEAD_KERNEL, HF_ARCHITECTURES, QA_OUTPUTS, \
    QUESTION_ANSWERING, REGRESSION, SINGLE_LABEL, TASKS, TOKEN_CLASSIFICATION, TaskHints, TaskSpec, \
    default_label_names
from export.weights import MLM_DECODER, OPTIONAL_CLASSES, expected_shapes, mlm_shapes


def check_mlm_head(reader: CheckpointReader, config: BertConfig, config_name: str) -> None:
    """Checks the checkpoint holds the whole masked-LM head, in the shapes `config` implies, and
    that any stored decoder matrix is the word embeddings (the tied decoder this tool exports)."""
    ckpt = reader.display_name
    expected = mlm_shapes(config)
    missing = [name for name in expected if name not in reader.tensors]
    if missing:
        names = [reader.source_name_for(m) for m in missing]
        raise InputError(f"{ckpt} lacks the masked-LM head --export_type=model_with_mlm needs: {listing(names)} "
                         "(pretraining checkpoints hold it; fine-tuned ones usually do not)",
                         detail="missing: " + ", ".join(names))
    wrong = [f"{reader.tensors[name].name} is {list(reader.tensors[name].shape)}, expected {list(shape)}"
             for name, shape in expected.items() if reader.tensors[name].canonical_shape != shape]
    if wrong:
        raise InputError(f"{ckpt} does not match {config_name}: " + "; ".join(wrong))
    decoder = reader.tensors.get(MLM_DECODER)
    if decoder is not None:
        import numpy as np

        word = reader.read("embeddings/word")
        if decoder.canonical_shape != word.shape or not np.array_equal(reader.read(MLM_DECODER), word):
            raise InputError(f"{ckpt}: the masked-LM decoder {decoder.name} is not tied to the word "
                             f"embeddings {reader.source_name_for('embeddings/word')} (an untied decoder "
                             "is not supported)")


def check_checkpoint(reader: CheckpointReader, config: BertConfig, config_name: str,
                     strict: bool = False, pooler: bool = True) -> list[str]:
    """Checks the checkpoint holds exactly the encoder `config` describes, before anything is read
    (without `pooler`: an encoder whose head reads sequence_output only; a stored pooler is left out).

    Raises InputError naming the first class of mismatch (layer count, sizes, missing variables by
    name, wrong shapes); returns warnings (unexpected extra variables, unless `strict`).
    """
    ckpt = reader.display_name
    if reader.num_layers != config.num_hidden_layers:
        raise InputError(f"{ckpt} has {reader.num_layers} transformer layers but {config_name} says "
                         f"num_hidden_layers={config.num_hidden_layers}")
    word = reader.tensors.get("embeddings/word")
    if word is not None:
        rows, width = word.canonical_shape[0], word.canonical_shape[-1]
        if width != config.hidden_size:
            raise InputError(f"{ckpt} has hidden size {width} (word embeddings {list(word.shape)}) but "
                             f"{config_name} says hidden_size={config.hidden_size}")
        if rows != config.vocab_size:
            raise InputError(f"{ckpt} has {rows} word-embedding rows but {config_name} says "
                             f"vocab_size={config.vocab_size}")
    expected = expected_shapes(config, pooler)
    missing = [name for name in expected if name not in reader.tensors]
    warnings = []
    for tensor_class, (names, consequence) in OPTIONAL_CLASSES.items():
        if not set(names) <= set(missing):
            continue
        message = (f"{ckpt} has no {tensor_class} ({', '.join(reader.source_name_for(n) for n in names)}): "
                   f"{consequence}")
        if strict:
            raise InputError(message + " (--strict)")
        for name in names:
            reader.initialise_missing(name, expected[name], consequence, config.initializer_range)
            missing.remove(name)
        warnings.append("UNTRAINED WEIGHTS: " + message)
    if missing:
        names = [reader.source_name_for(m) for m in missing]
        raise InputError(f"{ckpt} lacks {len(missing)} encoder variable(s): {listing(names)}",
                         detail="missing: " + ", ".join(names))
    wrong = [(name, shape) for name, shape in expected.items()
             if name in reader.tensors and reader.tensors[name].canonical_shape != shape]
    if wrong:
        raise InputError(_shape_mismatch(reader, config, config_name, wrong),
                         detail="; ".join(f"{reader.tensors[n].name} is {list(reader.tensors[n].shape)}, expected "
                                          f"{list(shape)}" for n, shape in wrong))
    unexpected = reader.unexpected
    if not unexpected:
        return warnings
    message = f"{ckpt} holds {len(unexpected)} unexpected variable(s), not exported: {listing(unexpected)}"
    if strict:
        raise InputError(message + " (--strict)", detail="unexpected: " + ", ".join(unexpected))
    return warnings + [message]


def _dimension_fields(canonical: str) -> tuple[str, ...]:
    """The config field each dimension of a canonical weight's shape comes from."""
    if canonical == "embeddings/position":
        return ("max_position_embeddings", "hidden_size")
    if canonical == "embeddings/type":
        return ("type_vocab_size", "hidden_size")
    if canonical == "embeddings/word":
        return ("vocab_size", "hidden_size")
    if canonical.endswith("/intermediate/kernel"):
        return ("hidden_size", "intermediate_size")
    if canonical.endswith("/intermediate/bias"):
        return ("intermediate_size",)
    if canonical.endswith("/output/kernel") and "/attention/" not in canonical:
        return ("intermediate_size", "hidden_size")
    return ("hidden_size", "hidden_size")


def _shape_mismatch(reader: CheckpointReader, config: BertConfig, config_name: str,
                    wrong: list[tuple[str, tuple[int, ...]]]) -> str:
    """One line naming the config fields the checkpoint's shapes contradict, with both values and
    the first variable that shows it: `intermediate_size: config.json 256, checkpoint 512 (...)`."""
    fields: dict[str, tuple[int, int, str]] = {}  # field -> (config value, checkpoint value, example)
    for name, shape in wrong:
        stored = reader.tensors[name]
        for field, want, got in zip(_dimension_fields(name), shape, stored.canonical_shape):
            if want != got and field not in fields:
                fields[field] = (want, got, f"{stored.name} is {list(stored.shape)}")
    if not fields:  # a rank mismatch: no dimension to name
        name, shape = wrong[0]
        stored = reader.tensors[name]
        return (f"{reader.display_name} does not match {config_name}: {stored.name} is {list(stored.shape)}, "
                f"expected {list(shape)} ({len(wrong)} variable(s) differ)")
    first, (want, got, example) = next(iter(fields.items()))
    others = "".join(f"; {field}: config {w}, checkpoint {g}" for field, (w, g, _) in list(fields.items())[1:])
    more = f"; {len(wrong) - 1} more variable(s) differ" if len(wrong) > 1 else ""
    return (f"{reader.display_name} does not match {config_name}: {first}: config {want}, checkpoint {got} "
            f"({example}{more}){others}")



def _tasks_of(head: HeadCandidate, hints: TaskHints, config_name: str) -> tuple[str, ...]:
    """The tasks `head` can be exported as, narrowed by the config's `architectures` where the
    format uses one layout for two tasks (transformers' `classifier` is both classifiers' head)."""
    if len(head.tasks) < 2 or not hints.architectures:
        return head.tasks
    if hints.task is None:
        raise InputError(f"{config_name}: architectures {list(hints.architectures)} is not a task this tool exports "
                         f"(its head {head.names} is read for {', '.join(HF_ARCHITECTURES)})")
    return (hints.task,) if hints.task in head.tasks else ()


def _choose_head(reader: CheckpointReader, hints: TaskHints, config_name: str,
                 requested: str | None) -> tuple[HeadCandidate, str, list[str]] | None:
    ckpt = reader.display_name
    heads = reader.heads
    found = "; ".join(h.describe() for h in heads)
    notes: list[str] = []
    if requested is None:
        if not heads:
            return None
        if len(heads) > 1:
            raise InputError(f"{ckpt} holds {len(heads)} task heads ({found}): pass --export_type="
                             f"{'|'.join(TASKS)} to choose one, or --export_type=model for the encoder")
        head = heads[0]
        tasks = _tasks_of(head, hints, config_name)
        if not tasks:
            raise InputError(f"{config_name} names {', '.join(hints.architectures)}, but {ckpt}'s head is "
                             f"{head.names}; pass --export_type to say which task it is")
        if len(tasks) > 1:
            notes.append(f"{head.names} read as a {tasks[0]} head ({head.trained_by[0]}); pass "
                         f"--export_type={tasks[1]} if it was trained for {tasks[1]}")
        return head, tasks[0], notes
    matching = [h for h in heads if requested in _tasks_of(h, hints, config_name)]
    if not matching:
        raise InputError(f"--export_type={requested}: {ckpt} holds no {requested} head (found: "
                         f"{found or 'no task head, only the encoder'})")
    if len(matching) > 1:
        raise InputError(f"--export_type={requested}: {ckpt} holds {len(matching)} heads that could be it ({found})")
    others = [h for h in heads if h is not matching[0]]
    if others:
        notes.append(f"{'; '.join(h.names for h in others)} not exported (another task head)")
    return matching[0], requested, notes


def select_task_head(reader: CheckpointReader, config: BertConfig, config_name: str, hints: TaskHints,
                     requested: str | None, label_names: tuple[str, ...] | None = None,
                     problem_type: str | None = None,
                     max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH) -> tuple[TaskSpec | None, list[str]]:
    """Detects (`requested` None) or finds (`requested` a task) the checkpoint's task head, checks
    it against the config and the label flags, and binds it to the canonical head names.

    Returns the head's TaskSpec (None when the checkpoint holds no task head and none was
    requested) and notes for the log. Every mismatch is an InputError naming the variable or flag.
    """
    chosen = _choose_head(reader, hints, config_name, requested)
    if chosen is None:
        if label_names or problem_type:
            raise InputError(f"--{'label_names' if label_names else 'problem_type'}: {reader.display_name} "
                             "holds no task head")
        return None, []
    head, task, notes = chosen
    ckpt = reader.display_name
    for tensor, name, other in ((head.kernel, head.kernel_name, head.bias_name),
                                (head.bias, head.bias_name, head.kernel_name)):
        if tensor is None:
            raise InputError(f"{ckpt} has {other} but lacks {name} (the head of "
                             f"{head.trained_by[head.tasks.index(task)]} is incomplete)")
    kernel, bias = head.kernel.canonical_shape, head.bias.canonical_shape
    outputs = kernel[-1] if len(kernel) == 2 else 0
    def stored(n) -> str:  # a kernel's expected shape, in the checkpoint's own layout
        return f"[{n}, {config.hidden_size}]" if head.kernel.merge == TRANSPOSE else f"[{config.hidden_size}, {n}]"
    if len(kernel) != 2 or kernel[0] != config.hidden_size or bias != (outputs,):
        raise InputError(f"{ckpt}: head {head.kernel_name} is {list(head.kernel.shape)} and {head.bias_name} "
                         f"{list(head.bias.shape)}; on hidden_size={config.hidden_size} ({config_name}) they "
                         f"should be {stored('N')} and [N]")
    if task == QUESTION_ANSWERING:
        if outputs != len(QA_OUTPUTS):
            raise InputError(f"{ckpt}: {head.kernel_name} is {list(head.kernel.shape)}, but a question-answering "
                             f"head has 2 outputs (start, end logits): expected {stored(2)}")
        if label_names or problem_type:
            raise InputError(f"--{'label_names' if label_names else 'problem_type'} applies to classification "
                             "and tagging, not question_answering")
        spec = TaskSpec(task, outputs, (), "", None, head.describe(task), 0.0, max_answer_length)
        bind_head(reader, spec)
        return spec, notes
    if hints.label_names is not None and len(hints.label_names) != outputs:
        raise InputError(f"{ckpt}: {head.kernel_name} has {outputs} outputs but {config_name}'s id2label names "
                         f"{len(hints.label_names)} labels")
    if label_names is not None:
        if len(label_names) != outputs:
            raise InputError(f"--label_names names {len(label_names)} labels but {head.kernel_name} has "
                             f"{outputs} outputs")
        if hints.label_names is not None and hints.label_names != label_names:
            notes.append(f"--label_names overrides {config_name}'s id2label ({', '.join(hints.label_names[:6])})")
        names, labels_from = label_names, "from --label_names"
    elif hints.label_names is not None:
        names, labels_from = hints.label_names, f"from {config_name} id2label"
    else:
        names, labels_from = default_label_names(outputs), "default names; set them with --label_names"
    if task == TOKEN_CLASSIFICATION:
        if problem_type:
            raise InputError("--problem_type applies to sequence_classification (a token classifier's labels "
                             "are single-label, softmax)")
        problem = None
    else:
        problem = problem_type or hints.problem_type or (REGRESSION if outputs == 1 else SINGLE_LABEL)
        if problem != REGRESSION and outputs == 1:
            raise InputError(f"{ckpt}: {head.kernel_name} has 1 output, too few for {problem} "
                             "(one output is a regression score: --problem_type=regression)")
    dropout = config.hidden_dropout_prob if hints.classifier_dropout is None else hints.classifier_dropout
    spec = TaskSpec(task, outputs, tuple(names), labels_from, problem, head.describe(task), dropout,
                    max_answer_length)
    bind_head(reader, spec)
    return spec, notes


def bind_head(reader: CheckpointReader, spec: TaskSpec) -> None:
    """Maps the one head that can be `spec.task` onto the canonical head names (the verifier
    calls this to read the head the exporter read)."""
    matching = [h for h in reader.heads if spec.task in h.tasks and h.describe(spec.task) == spec.head]
    if len(matching) != 1:
        raise InputError(f"{reader.display_name}: no single {spec.task} head {spec.head}")
    reader.tensors[HEAD_KERNEL], reader.tensors[HEAD_BIAS] = matching[0].kernel, matching[0].bias


def found_heads_note(reader: CheckpointReader, export_type: str) -> str | None:
    """For an encoder export of a fine-tuned checkpoint: which head is left out, and how to keep it."""
    if not reader.heads:
        return None
    return (f"task head {'; '.join(h.describe() for h in reader.heads)} not exported "
            f"(--export_type={export_type}; omit it to export the task)")
