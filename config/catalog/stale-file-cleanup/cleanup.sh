#!/bin/sh
# stale-file-cleanup: deletes (or, dry run, lists) files under $1 older than $2 days.
set -eu
dir="$1"
days="$2"
dry_run="$3"
case "$days" in
  ''|*[!0-9]*) echo "DAYS must be a whole number, got '$days'" >&2; exit 2 ;;
esac
case "$dir" in
  /*) ;;
  *) echo "DIR must be an absolute path, got '$dir'" >&2; exit 2 ;;
esac
if [ "$dir" = "/" ]; then
  echo "refusing to clean /" >&2
  exit 2
fi
if [ ! -d "$dir" ]; then
  echo "$dir is not a directory" >&2
  exit 1
fi
if [ "$dry_run" = "true" ]; then
  count=$(find "$dir" -type f -mtime +"$days" -print | tee /dev/stderr | wc -l)
  echo "dry run: $count file(s) older than $days day(s) would be deleted"
else
  count=$(find "$dir" -type f -mtime +"$days" -print -delete | wc -l)
  echo "deleted $count file(s) older than $days day(s)"
fi
echo "::worker metric files $count"
