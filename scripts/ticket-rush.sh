#!/usr/bin/env bash
# The shop from a shell: BUYERS independent `pk-ticket buy` processes, all
# started in the background at once, on one file of STOCK tickets. flock(2)
# makes exactly STOCK of them succeed (exit 0), each with its own ticket
# number; the rest find the shop sold out (exit 1).
# Usage: scripts/ticket-rush.sh [BUYERS [STOCK]]   (defaults 100 37)
# Exits 0 when every check holds, 1 otherwise.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
command -v pk-ticket >/dev/null || PATH="$here/target/release:$here/target/debug:$PATH"
buyers=${1:-100}
stock=${2:-37}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pk-ticket init "$work/product" "$stock" >/dev/null || exit

for i in $(seq 1 "$buyers"); do
  (
    pk-ticket buy "$work/product" >"$work/out.$i"
    echo $? >"$work/rc.$i"
  ) &
done
wait

bought=0 sold_out=0 other=0
for i in $(seq 1 "$buyers"); do
  case $(cat "$work/rc.$i") in
    0) bought=$((bought + 1)) ;;
    1) sold_out=$((sold_out + 1)) ;;
    *) other=$((other + 1)) ;;
  esac
done
numbers=$(sed -n 's/^bought ticket \([0-9]*\) .*/\1/p' "$work"/out.* | sort -n | tr '\n' ' ')
expected=$(seq 1 "$stock" | tr '\n' ' ')
left=$(pk-ticket show "$work/product")

echo "$buyers buyers, $stock tickets: $bought bought, $sold_out sold out, $other failed"
if [ "$numbers" = "$expected" ]; then
  echo "ticket numbers: 1..$stock, each sold once"
else
  echo "ticket numbers: WRONG: $numbers"
fi
echo "left in the file: $left"

[ "$bought" -eq "$stock" ] && [ "$sold_out" -eq $((buyers - stock)) ] && [ "$other" -eq 0 ] &&
  [ "$numbers" = "$expected" ] && [ "$left" = 0 ]
