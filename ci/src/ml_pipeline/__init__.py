"""ml-pipeline: the mlship CI/CD pipeline for ML models, one `dagger call` on any machine.

Lint, tests and data validation run in parallel; then training, the quality gate against
the champion, the serving image (deployment/Dockerfile), a Trivy scan gated by
`mlship scan-gate`, and — only when their credentials are given — publish and a
blue-green deploy to Kubernetes. Every stage runs the same `mlship …` command you can run
on the host to debug it. Start with `dagger call all` or `dagger check`.
"""

from .main import MlPipeline as MlPipeline
