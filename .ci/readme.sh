#!/usr/bin/env bash
# README.md is generated from nbs/index.ipynb (nbdev-readme needs Quarto, which cannot be installed here).
set -euo pipefail
cd "$(dirname "$0")/.."
jupyter nbconvert --log-level=ERROR --to markdown nbs/index.ipynb --stdout > README.md.tmp
{ echo '<!-- generated from nbs/index.ipynb by .ci/readme.sh: edit the notebook, not this file -->'; cat README.md.tmp; } > README.md
rm -f README.md.tmp
