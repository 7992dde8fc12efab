#!/bin/sh
# disk-usage-alert: fails when the filesystem holding $1 is more than $2 percent full.
set -eu
mount="$1"
threshold="$2"
case "$threshold" in
  ''|*[!0-9]*) echo "threshold must be a whole number of percent, got '$threshold'" >&2; exit 2 ;;
esac
used=$(df -P "$mount" | awk 'NR == 2 { sub(/%/, "", $5); print $5 }')
echo "::worker metric disk_used_percent $used"
if [ "$used" -gt "$threshold" ]; then
  echo "$mount is ${used}% full (threshold ${threshold}%)" >&2
  exit 1
fi
echo "$mount is ${used}% full (threshold ${threshold}%)"
