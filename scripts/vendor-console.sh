#!/usr/bin/env bash
# Copies the operator console's front-end libraries (pinned versions, from
# the npm registry) into control-plane/console/vendor/, and Swagger UI (the
# API reference at /v1/docs) into control-plane/docs-ui/vendor/, with their
# licences.
# The files are committed; run this only to change a version, then review
# the diff. `cargo build` embeds whatever is in that folder (see
# control-plane/src/console.rs), so nothing here runs at build time.
set -euo pipefail
cd "$(dirname "$0")/.."

UPLOT_VERSION=1.6.32
LEAFLET_VERSION=1.9.4
SWAGGER_UI_VERSION=5.35.0

dest=control-plane/console/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() { # package version -> unpacked folder
  (cd "$work" && npm pack --silent "$1@$2" >/dev/null && mkdir -p "$1" && tar -xzf "$1-$2.tgz" -C "$1")
  echo "$work/$1/package"
}

rm -rf "$dest"
mkdir -p "$dest/uplot" "$dest/leaflet/images"

src=$(fetch uplot "$UPLOT_VERSION")
cp "$src/dist/uPlot.esm.js" "$src/dist/uPlot.min.css" "$src/LICENSE" "$dest/uplot/"

src=$(fetch leaflet "$LEAFLET_VERSION")
cp "$src/dist/leaflet-src.esm.js" "$src/dist/leaflet.css" "$src/LICENSE" "$dest/leaflet/"
cp "$src/dist/images/"*.png "$dest/leaflet/images/"

cat > "$dest/VERSIONS" <<VERSIONS
uplot $UPLOT_VERSION (MIT) https://www.npmjs.com/package/uplot
leaflet $LEAFLET_VERSION (BSD-2-Clause) https://www.npmjs.com/package/leaflet
VERSIONS
echo "vendored into $dest:"
find "$dest" -type f | sort

docs=control-plane/docs-ui/vendor
rm -rf "$docs"
mkdir -p "$docs/swagger-ui"
src=$(fetch swagger-ui-dist "$SWAGGER_UI_VERSION")
cp "$src/swagger-ui-bundle.js" "$src/swagger-ui-bundle.js.LICENSE.txt" "$src/swagger-ui.css" \
  "$src/LICENSE" "$src/NOTICE" "$docs/swagger-ui/"
cat > "$docs/VERSIONS" <<VERSIONS
swagger-ui-dist $SWAGGER_UI_VERSION (Apache-2.0) https://www.npmjs.com/package/swagger-ui-dist
VERSIONS
echo "vendored into $docs:"
find "$docs" -type f | sort
