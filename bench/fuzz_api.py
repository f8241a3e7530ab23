"""Fuzz the API with schemathesis: requests generated from the app's own OpenAPI schema, both valid and
deliberately invalid, sent to the real app on a seeded database with an admin key. Prints the cases
run, the answers by status, and every 5xx or response that contradicts the schema.

    .venv/bin/python bench/fuzz_api.py [--cases 1000] [--seed 0] [--json FILE] [--database-url URL]

Each operation is fuzzed with generated path parameters and, where it has any, with the IDs of real
rows (a dataset, a model, its two versions, a queued and a succeeded request), so that the handlers are
reached past their 404s. tests/evidence/test_fuzz_api.py runs the same driver with a small budget.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from core.storage import local_path

REPO = Path(__file__).resolve().parents[1]
FuzzCheck = Callable[..., Any]
UNAUTHENTICATED_EXAMPLES = 2
"""Per operation, cases with a generated key (a 401 each): the auth tests cover the rest."""


@dataclass(frozen=True)
class Finding:
    operation: str
    status: int | None
    problem: str
    reproduce: str


@dataclass
class FuzzFigures:
    cases: int = 0
    seconds: float = 0.0
    operations: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    server_errors: list[Finding] = field(default_factory=list)
    nonconforming: list[Finding] = field(default_factory=list)
    not_generated: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "seconds": round(self.seconds, 1),
            "operations": self.operations,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "server_errors": [asdict(f) for f in self.server_errors],
            "nonconforming": [asdict(f) for f in self.nonconforming],
            "not_generated": self.not_generated,
        }


def response_checks() -> list[FuzzCheck]:
    """5xx, undocumented status, wrong content type, body or headers not as the schema says, and invalid
    input that was accepted."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]


@dataclass(frozen=True)
class Seeded:
    """Real rows the fuzzer may aim at, so that generated requests get past 404s and 422s."""

    path_ids: dict[str, list[str]]
    """Path-parameter name -> real IDs (dataset_id, model_id, version_id, request_id)."""
    train_ids: list[str]
    checkpoint: bytes
    """A valid safetensors checkpoint for the model's architecture."""


def _fixed_path_parameters(operation: Any, seeded: Seeded | None) -> list[dict[str, str] | None]:
    """None (generate them) and, when `seeded` has rows for every path parameter, each real row."""
    names = [p.name for p in operation.path_parameters]
    variants: list[dict[str, str] | None] = [None]
    if seeded is not None and names and all(name in seeded.path_ids for name in names):
        width = max(len(seeded.path_ids[name]) for name in names)
        variants += [
            {name: seeded.path_ids[name][i % len(seeded.path_ids[name])] for name in names}
            for i in range(width)
        ]
    return variants


def _has_negatable_input(operation: Any) -> bool:
    """Path parameters are unconstrained strings and the key is fixed: without a query, a body or another
    header there is no invalid request to generate (hypothesis would search in vain)."""
    others = [p for p in operation.headers if p.name != "Authorization"]
    return bool(list(operation.query) or list(operation.body) or others)


def _real_ids_in_bodies(seeded: Seeded) -> Any:
    """A hook for valid (positive) cases: now and then put real IDs, sample IDs and a real checkpoint
    into a generated body, so creation paths run too (invalid cases are left as generated)."""
    from hypothesis import strategies as st
    from schemathesis.hooks import HookDispatcher, HookScope

    def flatmap_body(context: Any, body: Any) -> Any:
        if not isinstance(body, dict):
            return st.just(body)
        real = dict(body)
        for name in ("model_id", "dataset_id"):
            if name in real:
                real[name] = seeded.path_ids[name][0]
        if "checkpoint" in real:
            real["checkpoint"] = seeded.checkpoint
        if context.operation.path == "/v1/deletion-requests":  # a request that can be accepted
            kept = {k: v for k, v in body.items() if k in ("external_ref", "callback_url", "method")}
            target = st.one_of(
                st.lists(st.sampled_from(seeded.train_ids), min_size=1, max_size=5, unique=True).map(
                    lambda ids: {"sample_ids": ids}
                ),
                st.integers(0, 9).map(lambda label: {"class": label}),
            )
            accepted = target.map(
                lambda chosen: {**kept, "method": "dau", "model_id": real["model_id"], **chosen}
            )
            return st.one_of(st.just(body), st.just(real), accepted)
        return st.sampled_from([body, real])

    dispatcher = HookDispatcher(scope=HookScope.TEST)
    dispatcher.register_hook_with_name(flatmap_body, "flatmap_body")
    return dispatcher


def fuzz_app(
    app: Any, headers: dict[str, str], seeded: Seeded, *, cases: int, seed: int = 0, max_rounds: int = 6
) -> FuzzFigures:
    """At least `cases` generated requests (unless `max_rounds` rounds run out first): each round gives
    every operation an equal share of what is left, split over valid and invalid data and over generated
    and real path parameters; a later round draws with other seeds. Operations whose input space is
    small (no query, no body) soon repeat themselves, so the others take up the rest."""
    import schemathesis

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    figures = FuzzFigures(operations=len(operations))
    run = _CaseRunner(figures, response_checks())
    body_hook = _real_ids_in_bodies(seeded)
    started = time.perf_counter()
    for round_number in range(max_rounds):
        left = cases - figures.cases
        if left <= 0:
            break
        per_operation = max(1, math.ceil(left / len(operations)))
        for index, operation in enumerate(operations):
            variants = _variants(operation, seeded, headers)
            authenticated = max(1, sum(1 for _, _, fixed_headers in variants if fixed_headers))
            for variant, (mode, fixed, fixed_headers) in enumerate(variants):
                if not fixed_headers and round_number:
                    continue  # unauthenticated cases: one round is enough
                examples = (
                    math.ceil(per_operation / authenticated) if fixed_headers else UNAUTHENTICATED_EXAMPLES
                )
                strategy = operation.as_strategy(
                    generation_mode=mode,
                    path_parameters=fixed,
                    headers=fixed_headers,
                    hooks=body_hook if mode.is_positive else None,
                )
                run_seed = hash((seed, round_number, index, variant)) & 0xFFFFFFFF
                problem = run.examples(strategy, examples, run_seed)
                if problem and round_number == 0:
                    figures.not_generated.append(f"{run.label(operation)} ({mode.value}){problem}")
    figures.seconds = time.perf_counter() - started
    return figures


def _variants(
    operation: Any, seeded: Seeded, headers: dict[str, str]
) -> list[tuple[Any, Any, dict[str, str]]]:
    """(generation mode, fixed path parameters, fixed headers) to fuzz one operation with."""
    from schemathesis import GenerationMode

    variants = [
        (GenerationMode.POSITIVE, fixed, headers) for fixed in _fixed_path_parameters(operation, seeded)
    ]
    if _has_negatable_input(operation):
        variants.append((GenerationMode.NEGATIVE, None, headers))
    if any(p.name == "Authorization" for p in operation.headers):
        variants.append((GenerationMode.POSITIVE, None, {}))  # a generated (hence unknown) key: 401
    return variants


@dataclass
class _CaseRunner:
    """Sends each generated case to the app and files what the checks say about the response."""

    figures: FuzzFigures
    checks: list[FuzzCheck]

    @staticmethod
    def label(operation: Any) -> str:
        return f"{operation.method.upper()} {operation.path}"

    def one(self, case: Any) -> None:
        from schemathesis.core.failures import Failure, FailureGroup

        label = self.label(case.operation)
        try:
            response = case.call()
        except Exception as error:  # the app raised through its error handlers: a 5xx with no body
            self.figures.cases += 1
            self.figures.by_status[500] += 1
            self.figures.by_operation[label] += 1
            problem = f"unhandled {type(error).__name__}: {error}"[:1500]
            self.figures.server_errors.append(Finding(label, None, problem, case.as_curl_command()))
            return
        self.figures.cases += 1
        self.figures.by_status[response.status_code] += 1
        self.figures.by_operation[label] += 1
        try:
            case.validate_response(response, checks=self.checks)
        except (FailureGroup, Failure) as error:
            failures = list(error.exceptions) if isinstance(error, FailureGroup) else [error]
            for failure in failures:
                finding = Finding(label, response.status_code, str(failure)[:1500], case.as_curl_command())
                found = (
                    self.figures.server_errors if response.status_code >= 500 else self.figures.nonconforming
                )
                found.append(finding)

    def examples(self, strategy: Any, count: int, seed: int) -> str:
        """Run up to `count` examples; returns why none could be generated, or ""."""
        import hypothesis
        from hypothesis import HealthCheck, Phase

        settings = hypothesis.settings(
            max_examples=count,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        test = hypothesis.seed(seed)(settings(hypothesis.given(case=strategy)(self.one)))
        try:
            test()
        except hypothesis.errors.Unsatisfiable:
            return ": unsatisfiable"
        except Exception as error:  # generation itself failed: report it, keep fuzzing the rest
            return f": {type(error).__name__}: {error}"[:300]
        return ""


def _load_evidence_helpers() -> ModuleType:
    name = "unlearn_evidence_helpers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "tests" / "evidence" / "evidence_helpers.py"
        )
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _checkpoint_bytes(directory: Path) -> bytes:
    from models.checkpoint import save_checkpoint
    from models.registry import build_model
    from models.spec import ModelSpec

    spec = ModelSpec(architecture="mlp", num_classes=10, in_channels=1, image_size=8, mean=[0.3], std=[0.4])
    path = directory / "mlp.safetensors"
    save_checkpoint(build_model(spec), path)
    return path.read_bytes()


@contextmanager
def seeded_app(settings: Any) -> Iterator[tuple[Any, dict[str, str], Seeded]]:
    """The app on a migrated database holding a digits dataset, an uploaded model, one queued and one
    succeeded deletion request (with its report, HTML page and second version). Yields the app, the
    admin's Authorization header and the real rows to aim at."""
    from fastapi.testclient import TestClient

    from app.auth import issue_api_key
    from app.main import create_app
    from core.db.migrate import upgrade
    from core.db.session import session_scope
    from unlearning.audit.html import render_html

    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        _, key = issue_api_key(session, "fuzz-admin", "admin")
    headers = {"Authorization": f"Bearer {key}"}
    app = create_app(settings, enqueue=lambda task, args: True)
    app.state.broker_ping = lambda url: None
    helpers = _load_evidence_helpers()
    checkpoint = _checkpoint_bytes(local_path(settings.artifact_url))
    with TestClient(app) as client:

        def created(response: Any) -> dict[str, Any]:
            assert response.status_code in (201, 202), response.text
            return response.json()  # type: ignore[no-any-return]

        dataset = created(
            client.post("/v1/datasets", json={"name": "digits", "format": "digits"}, headers=headers)
        )
        model = created(
            client.post(
                "/v1/models/upload",
                data={"name": "digits-mlp", "dataset_id": dataset["id"]},
                files={"checkpoint": ("m.safetensors", checkpoint, "application/octet-stream")},
                headers=headers,
            )
        )
        train = client.get(
            f"/v1/datasets/{dataset['id']}/samples", params={"split": "train", "limit": 500}, headers=headers
        )
        train_ids = [sample["sample_id"] for sample in train.json()["data"]]
        body = {"model_id": model["id"], "external_ref": "fuzz"}
        queued = created(
            client.post("/v1/deletion-requests", json={**body, "sample_ids": train_ids[:5]}, headers=headers)
        )
        done = created(
            client.post(
                "/v1/deletion-requests", json={**body, "sample_ids": train_ids[5:10]}, headers=headers
            )
        )
        report = helpers.synthetic_report()
        page = local_path(settings.artifact_url) / "reports" / f"{done['id']}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(render_html(report), encoding="utf-8")
        succeeded = helpers.succeed_request(
            settings.database_url,
            local_path(settings.artifact_url),
            done["id"],
            report.to_dict(),
            html_uri=str(page),
        )
    path_ids = {
        "dataset_id": [dataset["id"]],
        "model_id": [model["id"]],
        "version_id": [model["head_version_id"], succeeded.version_id],
        "request_id": [queued["id"], done["id"]],
    }
    yield app, headers, Seeded(path_ids, train_ids, checkpoint)


def fuzz_settings(directory: Path, database_url: str | None = None) -> Any:
    """Settings under `directory`; the database is a SQLite file there unless `database_url` names an
    empty database (PostgreSQL, say)."""
    from core.settings import Settings

    return Settings(
        env="test",
        var_dir=directory / "var",
        database_url=database_url or f"sqlite:///{directory / 'fuzz.db'}",
        artifact_url=(directory / "artifacts").as_uri(),
        broker_url="redis://127.0.0.1:1/0",
        server_secret="fuzz-server-secret-0123456789abcdef0123456789",
        verify_uploaded_weights=False,
        max_upload_bytes=4 * 1024 * 1024,
    )


def print_figures(figures: FuzzFigures) -> None:
    print(
        f"schemathesis {_version()}: {figures.cases} cases over {figures.operations} operations "
        f"in {figures.seconds:.1f} s"
    )
    print("answers by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(figures.by_status.items())))
    print(f"5xx: {len(figures.server_errors)}; not conforming to the schema: {len(figures.nonconforming)}")
    for finding in [*figures.server_errors, *figures.nonconforming][:20]:
        print(f"\n--- {finding.operation} -> {finding.status}\n{finding.problem}\n{finding.reproduce}")
    if figures.not_generated:
        print("no cases generated for: " + "; ".join(figures.not_generated))
    print("\ncases per operation:")
    for operation, count in sorted(figures.by_operation.items()):
        print(f"  {count:5d}  {operation}")


def _version() -> str:
    from importlib.metadata import version

    return version("schemathesis")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="generated requests in total (about)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--database-url", default=None, help="an EMPTY database to use (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="unlearn-fuzz-") as directory:
        with seeded_app(fuzz_settings(Path(directory), args.database_url)) as (app, headers, seeded):
            figures = fuzz_app(app, headers, seeded, cases=args.cases, seed=args.seed)
    print_figures(figures)
    if args.json:
        args.json.write_text(json.dumps({"schemathesis": _version(), **figures.summary()}, indent=2))
    sys.exit(1 if figures.server_errors else 0)


if __name__ == "__main__":
    main()
