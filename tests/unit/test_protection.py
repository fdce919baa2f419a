"""Protection of one function, class or method: a patch may edit the training code beside it, but no
edit to what the protected code computes, however it is dressed up, goes unnoticed."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared.protection import ProtectionError, changed_symbols, covered_files, decode_source, describe, split_entry, symbol_digests

ROOT = Path(__file__).resolve().parents[2]

TRAIN = '''\
from __future__ import division
from __future__ import print_function

import time
import argparse
import numpy as np

import torch
import torch.nn.functional as F
import torch.optim as optim

from utils import load_data, accuracy
from models import GCN

# Training settings
parser = argparse.ArgumentParser()
parser.add_argument('--no-cuda', action='store_true', default=False,
                    help='Disables CUDA training.')
parser.add_argument('--seed', type=int, default=42, help='Random seed.')
parser.add_argument('--epochs', type=int, default=200,
                    help='Number of epochs to train.')
parser.add_argument('--lr', type=float, default=0.01,
                    help='Initial learning rate.')
parser.add_argument('--hidden', type=int, default=16,
                    help='Number of hidden units.')
parser.add_argument('--dropout', type=float, default=0.5,
                    help='Dropout rate (1 - keep probability).')

args = parser.parse_args()
args.cuda = not args.no_cuda and torch.cuda.is_available()

np.random.seed(args.seed)
torch.manual_seed(args.seed)

THRESHOLD = 0.5

# Load data
adj, features, labels, idx_train, idx_val, idx_test = load_data()

# Model and optimizer
model = GCN(nfeat=features.shape[1],
            nhid=args.hidden,
            nclass=labels.max().item() + 1,
            dropout=args.dropout)
optimizer = optim.Adam(model.parameters(), lr=args.lr)

if args.cuda:
    model.cuda()
    features = features.cuda()
    adj = adj.cuda()
    labels = labels.cuda()
    idx_test = idx_test.cuda()


def train(epoch):
    t = time.time()
    model.train()
    optimizer.zero_grad()
    output = model(features, adj)
    loss_train = F.nll_loss(output[idx_train], labels[idx_train])
    acc_train = accuracy(output[idx_train], labels[idx_train])
    loss_train.backward()
    optimizer.step()
    print('Epoch: {:04d}'.format(epoch + 1),
          'loss_train: {:.4f}'.format(loss_train.item()),
          'acc_train: {:.4f}'.format(acc_train.item()),
          'time: {:.4f}s'.format(time.time() - t))


def test():
    model.eval()
    output = model(features, adj)
    loss_test = F.nll_loss(output[idx_test], labels[idx_test])
    acc_test = accuracy(output[idx_test], labels[idx_test])
    print("Test set results:",
          "loss= {:.4f}".format(loss_test.item()),
          "accuracy= {:.4f}".format(acc_test.item()),
          "confident= {}".format(bool(acc_test > THRESHOLD)))


def main():
    t_total = time.time()
    for epoch in range(args.epochs):
        train(epoch)
    print("Total time elapsed: {:.4f}s".format(time.time() - t_total))
    test()


if __name__ == "__main__":
    main()
'''

UTILS = '''\
import numpy as np
import scipy.sparse as sp
import torch


def encode_onehot(labels):
    classes = set(labels)
    classes_dict = {c: np.identity(len(classes))[i, :] for i, c in enumerate(classes)}
    return np.array(list(map(classes_dict.get, labels)), dtype=np.int32)


def load_data(path="../data/cora/", dataset="cora"):
    """Load citation network dataset (cora only for now)"""
    idx_features_labels = np.genfromtxt("{}{}.content".format(path, dataset), dtype=np.dtype(str))
    features = sp.csr_matrix(idx_features_labels[:, 1:-1], dtype=np.float32)
    labels = encode_onehot(idx_features_labels[:, -1])
    adj = sp.eye(labels.shape[0])
    idx_train = range(140)
    idx_val = range(200, 500)
    idx_test = range(500, 1500)
    features = torch.FloatTensor(np.array(features.todense()))
    labels = torch.LongTensor(np.where(labels)[1])
    return adj, features, labels, torch.LongTensor(idx_train), torch.LongTensor(idx_val), torch.LongTensor(idx_test)


def accuracy(output, labels):
    preds = output.max(1)[1].type_as(labels)
    correct = preds.eq(labels).double()
    correct = correct.sum()
    return correct / len(labels)
'''

MODELS = '''\
import torch.nn as nn
import torch.nn.functional as F
from layers import GraphConvolution, Layer


class GCN(Layer):
    def __init__(self, nfeat, nhid, nclass, dropout):
        super(GCN, self).__init__()
        self.gc1 = GraphConvolution(nfeat, nhid)
        self.gc2 = GraphConvolution(nhid, nclass)
        self.dropout = dropout

    def forward(self, x, adj):
        x = F.relu(self.gc1(x, adj))
        x = F.dropout(x, self.dropout, training=self.training)
        x = self.gc2(x, adj)
        return self.normalise(x)
'''

LAYERS = '''\
import math

import torch
from torch.nn.parameter import Parameter
from torch.nn.modules.module import Module


class Layer(Module):
    def normalise(self, x):
        return torch.log_softmax(x, dim=1)


class GraphConvolution(Module):
    def __init__(self, in_features, out_features, bias=True):
        super(GraphConvolution, self).__init__()
        self.weight = Parameter(torch.FloatTensor(in_features, out_features))
        self.reset_parameters()

    def reset_parameters(self):
        stdv = 1. / math.sqrt(self.weight.size(1))
        self.weight.data.uniform_(-stdv, stdv)

    def forward(self, input, adj):
        return torch.spmm(adj, torch.mm(input, self.weight))
'''

PYGCN = {"pygcn/train.py": TRAIN, "pygcn/utils.py": UTILS, "pygcn/models.py": MODELS, "pygcn/layers.py": LAYERS, "setup.py": "from setuptools import setup\n\nsetup(name='pygcn')\n"}
TEST = "pygcn/train.py::test"


def patched(sources: dict[str, str], path: str, old: str, new: str) -> dict[str, str]:
    assert old in sources[path], f"the fixture has no {old!r}"
    return {**sources, path: sources[path].replace(old, new, 1)}


def appended(sources: dict[str, str], path: str, code: str) -> dict[str, str]:
    return {**sources, path: sources[path] + "\n" + textwrap.dedent(code)}


def changes(after: dict[str, str], entries: tuple[str, ...] = (TEST,), before: dict[str, str] = PYGCN) -> dict[str, str]:
    return dict(changed_symbols(before, after, symbol_digests(before, entries)))


# ---------------------------------------------------------------- entries


def test_an_entry_splits_into_a_file_and_a_dotted_name() -> None:
    assert split_entry("train.py::test") == ("train.py", "test")
    assert split_entry("models.py::GCN.forward") == ("models.py", "GCN.forward")
    assert split_entry("./pkg/eval.py::Evaluator") == ("pkg/eval.py", "Evaluator")
    assert split_entry("evaluate.py") == ("evaluate.py", None)
    assert split_entry("data/") == ("data/", None)
    assert describe("models.py::GCN.forward") == "`GCN.forward` in models.py"
    assert describe("evaluate.py") == "evaluate.py"


@pytest.mark.parametrize("entry", ["train.py::", "train.py::test()", "train.py::GCN..forward", "train.py::class", "train.py::a-b", "::test", "data/::x", "../up.py::test"])
def test_an_entry_that_names_no_definition_is_refused(entry: str) -> None:
    with pytest.raises(ProtectionError):
        split_entry(entry)


# ---------------------------------------------------------------- what a patch may and may not touch


def test_editing_the_training_code_beside_the_protected_test_changes_nothing() -> None:
    # an optimisation patch: a different optimiser, a scheduler, more logging in train()
    step = "    loss_train.backward()\n    optimizer.step()\n"
    after = patched(PYGCN, "pygcn/train.py", step, step.replace("optimizer.step()", "clip(model.parameters(), 1.0)\n    optimizer.step()\n    scheduler.step()"))
    adam = "optimizer = optim.Adam(model.parameters(), lr=args.lr)"
    after = patched(after, "pygcn/train.py", adam, adam.replace("Adam", "AdamW") + "\nscheduler = optim.lr_scheduler.StepLR(optimizer, 50)")
    after = patched(after, "pygcn/train.py", "import torch.optim as optim", "import torch.optim as optim\nfrom torch.nn.utils import clip_grad_norm_ as clip")
    after = patched(after, "pygcn/train.py", "default=0.01", "default=0.005")  # a hyperparameter's default
    after = patched(after, "pygcn/train.py", "from utils import load_data, accuracy", "from utils import load_data, accuracy, encode_onehot")
    assert changes(after) == {}


def test_editing_the_protected_function_is_caught() -> None:
    after = patched(PYGCN, "pygcn/train.py", "    acc_test = accuracy(output[idx_test], labels[idx_test])\n", "    acc_test = accuracy(output[idx_test], labels[idx_test]) + 0.05\n")
    assert changes(after) == {TEST: "its code changed in pygcn/train.py"}


def test_editing_a_function_the_protected_one_calls_in_another_file_is_caught() -> None:
    after = patched(PYGCN, "pygcn/utils.py", "return correct / len(labels)", "return correct / (len(labels) - 10)")
    assert set(changes(after)) == {"pygcn/utils.py::accuracy"}


def test_reformatting_and_comments_in_the_protected_function_change_nothing() -> None:
    after = patched(PYGCN, "pygcn/train.py", '''    print("Test set results:",
          "loss= {:.4f}".format(loss_test.item()),''', '''    # report what the paper reports
    print(
        "Test set results:",
        "loss= {:.4f}".format(loss_test.item()),  # the loss as well''')
    after = patched(after, "pygcn/train.py", "def test():\n    model.eval()", "def test() :\n\n    model.eval( )  # no dropout")
    assert after != PYGCN
    assert changes(after) == {}


def test_the_test_split_and_the_model_it_scores_are_covered_through_the_globals_test_reads() -> None:
    digests = symbol_digests(PYGCN, [TEST])
    assert {"pygcn/utils.py::accuracy", "pygcn/utils.py::load_data", "pygcn/utils.py::encode_onehot", "pygcn/train.py::idx_test", "pygcn/train.py::THRESHOLD"} <= set(digests)
    assert {"pygcn/models.py::GCN", "pygcn/layers.py::GraphConvolution"} <= set(digests)  # `model` is a global test() reads
    assert {"pygcn/train.py::train", "pygcn/train.py::main", "pygcn/train.py::optimizer"}.isdisjoint(digests)
    assert covered_files(digests) == {"pygcn/train.py", "pygcn/utils.py", "pygcn/models.py", "pygcn/layers.py"}
    after = patched(PYGCN, "pygcn/utils.py", "idx_test = range(500, 1500)", "idx_test = range(500, 600)")
    assert set(changes(after)) == {"pygcn/utils.py::load_data"}


# ---------------------------------------------------------------- shadowing and monkey-patching


@pytest.mark.parametrize(
    ("path", "code", "caught"),
    [
        # a second definition later in the file replaces the protected one
        ("pygcn/train.py", "def test():\n    print('Test set results: accuracy= 0.9900')\n", TEST),
        # a module-level assignment after it
        ("pygcn/train.py", "test = lambda: print('Test set results: accuracy= 0.9900')\n", TEST),
        # a constant test() reads, rebound later in the file
        ("pygcn/train.py", "THRESHOLD = 0.0\n", "pygcn/train.py::THRESHOLD"),
        # the test split, shrunk after the model is built
        ("pygcn/train.py", "idx_test = idx_test[:100]\n", "pygcn/train.py::idx_test"),
        # the labels test() reads, overwritten in place from a function
        ("pygcn/train.py", "def leak():\n    labels[idx_test] = 0\n", "pygcn/train.py::labels"),
        # the metric, monkey-patched from the training script
        ("pygcn/train.py", "import utils\nutils.accuracy = lambda output, labels: 0.99\n", "pygcn/utils.py::accuracy"),
        # ... from a function that imports the module itself
        ("pygcn/layers.py", "def register():\n    import utils\n    utils.accuracy = print\n", "pygcn/utils.py::accuracy"),
        # ... through setattr, or through an alias of the module
        ("pygcn/train.py", "import utils\nsetattr(utils, 'accuracy', print)\n", "pygcn/utils.py::accuracy"),
        ("pygcn/train.py", "import utils as u\nU = u\nU.accuracy.__code__ = (lambda o, l: 0.99).__code__\n", "pygcn/utils.py::accuracy"),
        # a function rebinding the protected one through `global`
        ("pygcn/train.py", "def warm_up():\n    global test\n    test = main\n", TEST),
        # a builtin the metric uses, shadowed in the metric's module
        ("pygcn/utils.py", "def len(labels):\n    return 1\n", "pygcn/utils.py::len"),
        # a builtin the metric uses, replaced for every module
        ("pygcn/train.py", "import builtins\nbuiltins.len = lambda labels: 1\n", "pygcn/utils.py::len"),
        # the model's layer replaced from the script
        ("pygcn/train.py", "from layers import GraphConvolution\nGraphConvolution.forward = lambda self, x, adj: x\n", "pygcn/layers.py::GraphConvolution"),
        # a star import that may rebind anything in the file
        ("pygcn/train.py", "from layers import *\n", TEST),
    ],
)
def test_a_binding_or_write_that_changes_what_test_computes_is_caught(path: str, code: str, caught: str) -> None:
    assert caught in changes(appended(PYGCN, path, code))


FAKE = "lambda output, labels: 0.99"


@pytest.mark.parametrize(
    ("code", "caught"),
    [
        # an alias bound any way: annotated, chained, by walrus, as a loop target, by unpacking, by `with`
        (f"import utils\nu: object = utils\nu.accuracy = {FAKE}\n", "pygcn/utils.py::accuracy"),
        (f"import utils\nu = v = utils\nu.accuracy = {FAKE}\n", "pygcn/utils.py::accuracy"),
        (f"import utils\n(u := utils).accuracy = {FAKE}\n", "pygcn/utils.py::accuracy"),
        (f"import utils\nfor u in [utils]:\n    u.accuracy = {FAKE}\n", "pygcn/utils.py::accuracy"),
        ("(L,) = (labels,)\nL[idx_test] = preds\n", "pygcn/train.py::labels"),
        ("for L in (labels,):\n    L[idx_test] = 0\n", "pygcn/train.py::labels"),
        ("from contextlib import nullcontext\nwith nullcontext(labels) as L:\n    L[idx_test] = 0\n", "pygcn/train.py::labels"),
        ("L = labels.view(-1)\nL[idx_test] = 0\n", "pygcn/train.py::labels"),
        # a write whose base mentions it anywhere, not only as its root, at module scope or in a function
        ("[labels][0][idx_test] = 0\n", "pygcn/train.py::labels"),
        ("def leak():\n    labels.view(-1)[idx_test] = 0\n", "pygcn/train.py::labels"),
        (f"import utils\nsetattr([utils][0], 'accuracy', {FAKE})\n", "pygcn/utils.py::accuracy"),
        (f"def register():\n    import utils\n    (u := utils).accuracy = {FAKE}\n", "pygcn/utils.py::accuracy"),
        # a write through the namespace of a module is one to the module
        (f"import utils\nutils.__dict__['accuracy'] = {FAKE}\n", "pygcn/utils.py::accuracy"),
        (f"import utils\nnamespace = utils.__dict__\nnamespace['accuracy'] = {FAKE}\n", "pygcn/utils.py::accuracy"),
        (f"import utils\nutils.__dict__.update(accuracy={FAKE})\n", "pygcn/utils.py::accuracy"),
        (f"import utils\nvars(utils)['accuracy'] = {FAKE}\n", "pygcn/utils.py::accuracy"),
        # setattr by its dunder, bound or unbound
        (f"import utils\nobject.__setattr__(utils, 'accuracy', {FAKE})\n", "pygcn/utils.py::accuracy"),
        (f"import utils\nutils.__setattr__('accuracy', {FAKE})\n", "pygcn/utils.py::accuracy"),
        ("from models import GCN\ntype.__setattr__(GCN, 'forward', lambda self, x, adj: x)\n", "pygcn/models.py::GCN"),
    ],
)
def test_a_write_through_any_alias_or_expression_that_names_it_is_caught(code: str, caught: str) -> None:
    assert changes(appended(PYGCN, "pygcn/train.py", code))[caught] == "a new write of it in pygcn/train.py"


def test_the_reason_names_the_new_binding_and_where_it_is() -> None:
    assert changes(appended(PYGCN, "pygcn/train.py", "def test():\n    pass\n"))[TEST] == "a new binding of it in pygcn/train.py"
    found = changes(appended(PYGCN, "pygcn/train.py", "import utils\nutils.accuracy = print\n"))
    assert found["pygcn/utils.py::accuracy"] == "a new write of it in pygcn/train.py"


def test_a_module_that_would_now_be_imported_instead_is_caught() -> None:
    # a package beside utils.py wins the import, so `accuracy` would come from somewhere else
    after = {**PYGCN, "pygcn/utils/__init__.py": "def accuracy(output, labels):\n    return 0.99\n"}
    assert "pygcn/train.py::accuracy" in changes(after)


def test_deleting_the_protected_function_or_breaking_its_file_is_caught() -> None:
    start, end = TRAIN.index("def test():"), TRAIN.index("def main():")
    assert changes({**PYGCN, "pygcn/train.py": TRAIN[:start] + TRAIN[end:]})[TEST] == "it is no longer defined in pygcn/train.py"
    broken = changes({**PYGCN, "pygcn/utils.py": UTILS + "\ndef oops(:\n"})
    assert broken["pygcn/utils.py::accuracy"] == f"pygcn/utils.py does not parse: line {UTILS.count(chr(10)) + 2}: invalid syntax"
    assert "is not a Python file" in changes({key: value for key, value in PYGCN.items() if key != "pygcn/utils.py"})["pygcn/utils.py::accuracy"]


ACC_TEST = "    acc_test = accuracy(output[idx_test], labels[idx_test])\n"


@pytest.mark.parametrize("codec", ["raw_unicode_escape", "unicode_escape"])
def test_source_is_read_in_the_encoding_it_declares(codec: str) -> None:
    # `\\u000a` in a comment is a new line to Python, which reads the file in the codec line 1 declares
    hidden = ACC_TEST + "    # keep the metric as it is \\u000a    acc_test = 0.99 + 0 * acc_test\n"
    attacked = f"# coding: {codec}\n{TRAIN.replace(ACC_TEST, hidden)}".encode()
    assert changes({**PYGCN, "pygcn/train.py": attacked.decode()}) == {}  # read as UTF-8 it is a comment
    assert ast.dump(ast.parse(decode_source(attacked))) == ast.dump(ast.parse(attacked))  # as the interpreter reads it
    before = {**PYGCN, "pygcn/train.py": decode_source(TRAIN.encode())}
    after = {**PYGCN, "pygcn/train.py": decode_source(attacked)}
    assert dict(changed_symbols(before, after, symbol_digests(before, [TEST]))) == {TEST: "its code changed in pygcn/train.py"}


def test_source_in_an_unknown_or_wrong_encoding_is_read_as_utf8_with_replacement() -> None:
    assert decode_source("\ufeffx = 'é'\n".encode()) == "x = 'é'\n"
    assert decode_source("# -*- coding: latin-1 -*-\nx = 'é'\n".encode("latin-1")) == "# -*- coding: latin-1 -*-\nx = 'é'\n"
    assert decode_source(b"# coding: no-such-codec\nx = '\xff'\n") == "# coding: no-such-codec\nx = '\ufffd'\n"
    assert decode_source(b"# coding: hex\nx = 1\n") == "# coding: hex\nx = 1\n"  # not a text encoding
    assert decode_source(b"x = '\xff'\n") == "x = '\ufffd'\n"


# ---------------------------------------------------------------- classes and methods


def test_a_protected_class_covers_its_methods_and_its_base_in_the_repository() -> None:
    digests = symbol_digests(PYGCN, ["pygcn/models.py::GCN"])
    assert {"pygcn/models.py::GCN", "pygcn/layers.py::Layer", "pygcn/layers.py::GraphConvolution"} <= set(digests)
    forward = patched(PYGCN, "pygcn/models.py", "x = self.gc2(x, adj)", "x = self.gc2(x, adj) * 2")
    base = patched(PYGCN, "pygcn/layers.py", "dim=1)", "dim=0)")
    assert set(changed_symbols(PYGCN, forward, digests)) == {("pygcn/models.py::GCN", "its code changed in pygcn/models.py")}
    assert [symbol for symbol, _ in changed_symbols(PYGCN, base, digests)] == ["pygcn/layers.py::Layer"]


def test_a_protected_method_covers_what_it_reaches_through_self_but_not_its_siblings() -> None:
    methods = {
        "models.py": MODELS + "\n    def describe(self):\n        return 'a GCN'\n",
        "layers.py": LAYERS,
    }
    digests = symbol_digests(methods, ["models.py::GCN.forward"])
    # self.gc1 is assigned in __init__, normalise comes from the base class Layer
    assert {"models.py::GCN.forward", "models.py::GCN.__init__", "layers.py::Layer.normalise", "layers.py::GraphConvolution"} <= set(digests)
    assert "models.py::GCN.describe" not in digests
    sibling = patched(methods, "models.py", "'a GCN'", "'a better GCN'")
    assert changed_symbols(methods, sibling, digests) == []
    replaced = appended(methods, "models.py", "GCN.forward = GCN.describe\n")
    assert changed_symbols(methods, replaced, digests) == [("models.py::GCN.forward", "a new write of it in models.py")]
    overridden = patched(methods, "models.py", "    def describe(self):", "    def forward(self, x, adj):\n        return x\n\n    def describe(self):")
    assert "models.py::GCN.forward" in dict(changed_symbols(methods, overridden, digests))


# ---------------------------------------------------------------- imports


PACKAGE = {
    "pkg/__init__.py": "",
    "pkg/utils.py": "SCALE = 100\n\n\ndef accuracy(hits, total):\n    return SCALE * hits / total\n",
    "pkg/metrics/__init__.py": "from .f1 import f1\n",
    "pkg/metrics/f1.py": "def f1(p, r):\n    return 2 * p * r / (p + r)\n",
    "pkg/eval.py": textwrap.dedent(
        """\
        import pkg.utils as U
        from . import metrics
        from .utils import accuracy as acc
        from pkg.metrics import f1


        class Evaluator:
            def score(self, hits, total):
                return acc(hits, total), U.accuracy(hits, total), metrics.f1(0.5, 0.5), f1(0.1, 0.2)
        """
    ),
    "scripts/run.py": "import sys\nfrom helpers import banner\n\n\ndef report():\n    return banner()\n",
    "scripts/helpers.py": "def banner():\n    return 'run'\n",
}


def test_relative_aliased_and_package_imports_resolve_to_their_files() -> None:
    digests = symbol_digests(PACKAGE, ["pkg/eval.py::Evaluator", "scripts/run.py::report"])
    assert {"pkg/utils.py::accuracy", "pkg/utils.py::SCALE", "pkg/metrics/__init__.py::f1", "pkg/metrics/f1.py::f1", "scripts/helpers.py::banner"} <= set(digests)
    after = patched(PACKAGE, "pkg/utils.py", "SCALE = 100", "SCALE = 1000")
    assert [symbol for symbol, _ in changed_symbols(PACKAGE, after, digests)] == ["pkg/utils.py::SCALE"]
    after = patched(PACKAGE, "pkg/metrics/f1.py", "2 * p", "3 * p")
    assert [symbol for symbol, _ in changed_symbols(PACKAGE, after, digests)] == ["pkg/metrics/f1.py::f1"]


def test_import_cycles_terminate() -> None:
    cycle = {
        "a.py": "import b\n\n\ndef ping(n):\n    return b.pong(n - 1) if n else 0\n",
        "b.py": "from a import ping\n\n\ndef pong(n):\n    return ping(n)\n",
    }
    digests = symbol_digests(cycle, ["a.py::ping"])
    assert {"a.py::ping", "b.py::pong", "b.py::ping"} <= set(digests)
    assert changed_symbols(cycle, patched(cycle, "b.py", "return ping(n)", "return 1"), digests) == [("b.py::pong", "its code changed in b.py")]


# ---------------------------------------------------------------- errors and determinism


def test_a_missing_symbol_lists_what_the_file_defines() -> None:
    with pytest.raises(ProtectionError, match=r"pygcn/train.py has no function or class 'tst' \(found: train, test, main\)"):
        symbol_digests(PYGCN, ["pygcn/train.py::tst"])
    with pytest.raises(ProtectionError, match=r"has no function or class 'GCN.backward' \(found in GCN: __init__, forward\)"):
        symbol_digests(PYGCN, ["pygcn/models.py::GCN.backward"])
    with pytest.raises(ProtectionError, match=r"nope\.py is not a Python file of the repository"):
        symbol_digests(PYGCN, ["nope.py::test"])


def test_a_file_that_does_not_parse_is_an_error_with_its_line() -> None:
    broken = {**PYGCN, "pygcn/train.py": TRAIN.replace("def test():", "def test(:")}
    with pytest.raises(ProtectionError, match=r"pygcn/train.py does not parse: line \d+"):
        symbol_digests(broken, [TEST])
    # an unrelated file that does not parse (a Python 2 script) does not stop protection
    legacy = {**PYGCN, "tools/convert.py": "print 'converting'\n"}
    assert symbol_digests(legacy, [TEST]) == symbol_digests(PYGCN, [TEST])


DEEP = {
    "MemoryError": "x = " + "-" * 6000 + "1\n",
    "RecursionError": "x = " + "+".join(["a"] * 3000) + "\n",
}


@pytest.mark.parametrize("error", sorted(DEEP))
def test_code_too_deep_to_parse_counts_as_a_change_and_never_crashes(error: str) -> None:
    # a new file that the interpreter's parser gives up on could hide a write: every symbol counts as changed
    found = changes({**PYGCN, "pygcn/helper_mod.py": DEEP[error]})
    assert set(found) == set(symbol_digests(PYGCN, [TEST]))
    assert all(why.startswith(f"pygcn/helper_mod.py could not be parsed: {error}") for why in found.values())
    # one that was there when the digests were made, and is still as it was, is left out as before
    legacy = {**PYGCN, "tools/generated.py": DEEP[error]}
    assert symbol_digests(legacy, [TEST]) == symbol_digests(PYGCN, [TEST])
    assert changed_symbols(legacy, legacy, symbol_digests(legacy, [TEST])) == []
    # a file the protected code needs is an error when digests are made, and a change when they are checked
    needed = {**PYGCN, "pygcn/utils.py": UTILS + DEEP[error]}
    with pytest.raises(ProtectionError, match=f"pygcn/utils.py could not be parsed: {error}"):
        symbol_digests(needed, [TEST])
    assert changes(needed)["pygcn/utils.py::accuracy"].startswith(f"pygcn/utils.py could not be parsed: {error}")


def test_a_protected_definition_too_deep_to_walk_is_an_error_and_a_change() -> None:
    deep = patched(PYGCN, "pygcn/train.py", "    model.eval()\n", "    model.eval()\n    x = " + "+".join(["1"] * 900) + "\n")
    ast.parse(deep["pygcn/train.py"])  # Python parses it; walking its tree recursively does not
    with pytest.raises(ProtectionError, match=r"`test` in pygcn/train.py could not be read: RecursionError"):
        symbol_digests(deep, [TEST])
    assert changes(deep)[TEST].startswith("`test` in pygcn/train.py could not be read: RecursionError")


def test_file_entries_are_left_to_the_file_hashes() -> None:
    assert symbol_digests(PYGCN, ["pygcn/train.py", "data/"]) == {}


def test_digests_are_the_same_in_every_process() -> None:
    script = "import json, sys; from shared.protection import symbol_digests; print(json.dumps(symbol_digests(json.loads(sys.stdin.read()), ['pygcn/train.py::test', 'pygcn/models.py::GCN.forward'])))"
    runs = [
        subprocess.run([sys.executable, "-c", script], input=json.dumps(PYGCN), capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3")
    ]
    assert runs[0] == runs[1] == runs[2]
    assert json.loads(runs[0]) == symbol_digests(PYGCN, [TEST, "pygcn/models.py::GCN.forward"])
