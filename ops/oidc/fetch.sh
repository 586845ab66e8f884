#!/bin/sh
# Fetch the OpenID Connect provider the console's tests sign in through (navikt's
# mock-oauth2-server, version pinned in ops/oidc/pom.xml) and its runtime jars from Maven
# Central into a cache directory; print that directory. Idempotent: a complete cache is
# reused without touching the network. Needs java (17+) and mvn.
#
#   ops/oidc/fetch.sh            -> $OIDC_PROVIDER_CACHE or ~/.cache/fraud-stream/oidc/<version>
#   java -cp "<dir>/*" no.nav.security.mock.oauth2.StandaloneMockOAuth2ServerKt
set -eu
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's:.*<mock-oauth2-server.version>\(.*\)</mock-oauth2-server.version>.*:\1:p' "$here/pom.xml")
dir=${OIDC_PROVIDER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fraud-stream/oidc/$version}
if [ ! -f "$dir/.complete" ]; then
    mkdir -p "$dir"
    mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$dir" -DincludeScope=runtime >&2
    test -f "$dir/mock-oauth2-server-$version.jar"
    touch "$dir/.complete"
fi
echo "$dir"
