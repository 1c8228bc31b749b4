#!/usr/bin/env bash
# Fetch the chat page's JavaScript libraries from the npm registry (`npm pack`, pinned versions, checked sha256)
# and copy the few files the page loads, with their licences, into lmlit/static/vendor/.
# Run it from anywhere: `bash tools/vendor_js.sh`; commit what changes. Nothing is fetched at page load (CSP 'self').
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/lmlit/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# name@version  tarball sha256  files to keep (tarball path -> vendor name)
fetch() {
  local spec="$1" sha="$2"
  shift 2
  (cd "$work" && npm pack "$spec" --silent >/dev/null)
  local tgz
  tgz="$(ls -t "$work"/*.tgz | head -1)"
  echo "$sha  $tgz" | sha256sum -c --quiet - || { echo "checksum of $spec differs from the pinned one; refusing" >&2; exit 1; }
  mkdir -p "$work/x"
  tar xzf "$tgz" -C "$work/x"
  while [ $# -gt 0 ]; do
    cp "$work/x/package/$1" "$out/$2"
    shift 2
  done
  rm -rf "$work/x" "$tgz"
  echo "$spec $sha" >> "$out/VERSIONS"
}

rm -rf "$out"
mkdir -p "$out"
{
  echo "# npm package@version and the sha256 of its tarball; written by tools/vendor_js.sh"
  echo "# licences: marked MIT, highlight.js BSD-3-Clause, DOMPurify (MPL-2.0 OR Apache-2.0) used under Apache-2.0"
} > "$out/VERSIONS"
fetch marked@18.2.1 d66c5213fc203466186060105b01f51896764ba64b3797d2620d02e28e34b8ca \
  lib/marked.umd.js marked.umd.js  LICENSE LICENSE.marked
fetch dompurify@3.5.0 faa5f2bfe2814384b83d6edb4ed66812fbfdb2a654b4d59edd4b12304058ec20 \
  dist/purify.min.js purify.min.js  LICENSE LICENSE.dompurify
fetch @highlightjs/cdn-assets@11.12.0 b8a006d30f45afe783072569f3d69c5b60c0e7b9ca28cd474e12f2584e2a3bd9 \
  highlight.min.js highlight.min.js  styles/github.min.css hljs-light.min.css  styles/github-dark.min.css hljs-dark.min.css \
  LICENSE LICENSE.highlightjs
# the bundles end on a source-map comment naming a file that is not shipped: drop it so browsers do not ask for it
sed -i '/^\/\/# sourceMappingURL=/d' "$out"/*.js
ls -l "$out"
