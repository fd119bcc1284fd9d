#!/bin/sh
# Reproduces chat/static/chat/vendor/ (the Markdown parser and the HTML sanitizer of the web
# chat) from the pinned versions in vendor/package-lock.json: `npm ci` checks each tarball
# against the lock's integrity hash, runs no install scripts, and the built files are copied
# with their licences. Needs node and npm only here; running the site needs neither.
set -eu
cd "$(dirname "$0")/.."
out=chat/static/chat/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp vendor/package.json vendor/package-lock.json "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --omit=optional --loglevel=error)
mods="$work/node_modules"
mkdir -p "$out"
cp "$mods/marked/lib/marked.esm.js" "$out/marked.esm.js"
cp "$mods/marked/LICENSE" "$out/marked.LICENSE"
cp "$mods/dompurify/dist/purify.es.mjs" "$out/purify.es.js"
cp "$mods/dompurify/LICENSE" "$out/dompurify.LICENSE"
cp "$mods/dompurify/LICENSE-MPL" "$out/dompurify.LICENSE-MPL"
# Source maps are not shipped: drop the comments that name them.
sed -i '/sourceMappingURL=/d' "$out/marked.esm.js" "$out/purify.es.js"
node -e '
const lock = require(process.argv[1]);
const pkgs = lock.packages;
const lines = ["The web chat'"'"'s third-party browser code, copied by `make vendor` (ops/vendor.sh) from", "the npm registry at the versions and integrity hashes of vendor/package-lock.json:", ""];
for (const name of ["marked", "dompurify"]) {
  const p = pkgs["node_modules/" + name];
  lines.push(`${name} ${p.version} (${p.license}) ${p.integrity}`);
}
require("fs").writeFileSync(process.argv[2], lines.join("\n") + "\n");
' "$PWD/vendor/package-lock.json" "$out/VERSIONS.txt"
ls -l "$out"
