"""Whether two profiles can be compared at all: the GPU, driver, CUDA and nsys each side ran on, how
many processes and GPUs the side holds, and how many forwards each phase kept (seed 002: latencies
of different hardware or too few forwards say little). A short score with a warning per difference;
nothing here fails a verdict, but a verdict across GPU models says so first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align.profile.reader import Profile
from align.profile.schema import KERNEL_TABLE

MIN_FORWARDS = 3  # medians over fewer forwards than this are flagged


@dataclass
class Environment:
    """What one side ran on, as its export records it (None where it does not)."""

    gpu: str | None
    sm_count: int | None
    max_clock_mhz: float | None
    driver: str | None
    cuda_driver: str | None
    nsys: str | None
    processes: int
    gpus_used: int

    def gpu_words(self) -> str:
        sms = f", {self.sm_count} SMs" if self.sm_count else ""
        return f"{self.gpu or 'an unknown GPU'}{sms}"


@dataclass
class Comparability:
    score: int
    checks: int
    warnings: list[str] = field(default_factory=list)
    mock: Environment | None = None
    e2e: Environment | None = None
    forwards: dict[str, tuple[int, int]] = field(default_factory=dict)  # phase -> (mock kept, E2E kept)

    @property
    def same_gpu(self) -> bool:
        return self.mock is None or self.e2e is None or self.mock.gpu == self.e2e.gpu

    def headline(self) -> str:
        """The first line of a verdict across GPU models; empty when both sides ran on one model."""
        if self.same_gpu:
            return ""
        return (f"DIFFERENT GPUs: mock on {self.mock.gpu_words()}, E2E on {self.e2e.gpu_words()}: latencies "
                "compare different hardware")

    def line(self) -> str:
        env = self.e2e
        base = (f"comparability {self.score}/{self.checks}" +
                (f": {env.gpu_words()}, driver {env.driver or '?'}, CUDA {_cuda(env.cuda_driver)}, nsys {env.nsys or '?'}"
                 if not self.warnings and env else ""))
        kept = "; ".join(f"{ph} {m} mock / {e} E2E forwards" for ph, (m, e) in self.forwards.items())
        return base + (f"; {kept}" if kept else "")

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"score": self.score, "checks": self.checks, "warnings": list(self.warnings),
                "mock": asdict(self.mock) if self.mock else None, "e2e": asdict(self.e2e) if self.e2e else None,
                "forwards": {ph: {"mock": m, "e2e": e} for ph, (m, e) in self.forwards.items()}}


def environment(profile: Profile, where: str | None = None) -> Environment:
    """The side's GPU (the one its kernels ran on, ``where`` picking a process or device), driver,
    CUDA driver and nsys versions."""
    conn, s = profile.conn, profile.schema
    used: list[int] = []
    if profile.has_kernels and "deviceId" in s.columns(KERNEL_TABLE):
        used = [r[0] for r in conn.execute(f"SELECT DISTINCT deviceId FROM {KERNEL_TABLE}"
                                           + (f" WHERE {where}" if where else ""))]
    gpu = sms = clock = None
    if s.has("TARGET_INFO_GPU"):
        cols = s.columns("TARGET_INFO_GPU")
        want = [c for c in ("id", "name", "smCount", "clockRate") if c in cols]
        rows = [dict(zip(want, r)) for r in conn.execute(f"SELECT {', '.join(want)} FROM TARGET_INFO_GPU")]
        mine = [r for r in rows if r.get("id") in used] or rows
        if mine:
            names = sorted({str(r.get("name")) for r in mine})
            gpu = " + ".join(names)
            sms = mine[0].get("smCount")
            clock = mine[0]["clockRate"] / 1e6 if mine[0].get("clockRate") else None
    env = {}
    if s.has("TARGET_INFO_SYSTEM_ENV") and {"name", "value"} <= s.columns("TARGET_INFO_SYSTEM_ENV"):
        env = dict(conn.execute("SELECT name, value FROM TARGET_INFO_SYSTEM_ENV "
                                "WHERE name IN ('NvDriverVersion', 'CudaDriverVersion')").fetchall())
    return Environment(gpu=gpu, sm_count=int(sms) if sms else None, max_clock_mhz=clock,
                       driver=env.get("NvDriverVersion"), cuda_driver=env.get("CudaDriverVersion"),
                       nsys=profile.product_version, processes=profile.process_count(),
                       gpus_used=len(used))


def _cuda(code: str | None) -> str:
    """CUDA driver version as nsys stores it (13000) in the usual spelling (13.0)."""
    if not code or not str(code).isdigit():
        return code or "?"
    v = int(code)
    return f"{v // 1000}.{(v % 1000) // 10}"


def assess(mock: Environment, e2e: Environment, forwards: dict[str, tuple[int, int]]) -> Comparability:
    """One check per property; a warning names each that differs, and each phase with few forwards."""
    out = Comparability(score=0, checks=0, mock=mock, e2e=e2e, forwards=forwards)
    pairs = [("GPU", mock.gpu, e2e.gpu), ("SM count", mock.sm_count, e2e.sm_count),
             ("GPU max clock (MHz)", mock.max_clock_mhz, e2e.max_clock_mhz), ("driver", mock.driver, e2e.driver),
             ("CUDA driver", _cuda(mock.cuda_driver), _cuda(e2e.cuda_driver)), ("nsys", mock.nsys, e2e.nsys)]
    for what, a, b in pairs:
        if a is None or b is None:
            continue  # not recorded on a side: nothing to compare, nothing claimed
        out.checks += 1
        if a == b:
            out.score += 1
        else:
            out.warnings.append(f"{what} differs: mock {a}, E2E {b}")
    for ph, (m, e) in forwards.items():
        out.checks += 1
        if min(m, e) >= MIN_FORWARDS:
            out.score += 1
        else:
            out.warnings.append(f"{ph}: medians over {m} mock and {e} E2E forward(s) (fewer than {MIN_FORWARDS})")
    return out
