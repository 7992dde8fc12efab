# Summarises a `cargo test` log: one line per suite (test binary or doc-tests)
# with how many tests passed, failed, were skipped (a `SKIPPED <test>: <reason>`
# notice from worker_tests::skip; the harness counts such a test as passed)
# and why, and how many are #[ignore]d.
# Then the tests that could not run under CI, with their reasons.
function flush_suite() {
    if (suite == "") return
    # A skipped test returned early: the harness counted it as passed.
    line = sprintf("  %-58s %4d ran (%d passed, %d failed), %d skipped, %d ignored",
                   suite, passed + failed - skipped, passed - skipped, failed, skipped, ignored)
    if (result == "") line = line " (no result: the binary did not finish)"
    print line
    for (r in reasons) print "      skipped " reasons[r] "x: " r
    delete reasons
    suite = ""; result = ""
    passed = failed = skipped = ignored = 0
}
/^ *Running / {
    flush_suite()
    # "Running tests/store.rs (target/debug/deps/store-0123abcd)"
    src = $2; bin = $NF; sub(/\)$/, "", bin); sub(/.*\//, "", bin); sub(/-[0-9a-f]+$/, "", bin)
    if (src == "unittests") src = $3
    suite = bin " (" src ")"
    next
}
/^ *Doc-tests / { flush_suite(); suite = "doc-tests " $2; next }
/^SKIPPED / {
    skipped++
    reason = $0; sub(/^SKIPPED [^ ]*: /, "", reason)
    reasons[reason]++
    next
}
/cannot run, and CI must not skip it: / {
    # Once per test (the message can be printed more than once), grouped by reason.
    test = $0; sub(/ cannot run, and CI must not skip it: .*/, "", test); sub(/.* /, "", test)
    why = $0; sub(/.*CI must not skip it: /, "", why)
    if (!((test, why) in seen)) { seen[test, why] = 1; blocked[why]++ }
}
/^test result: / {
    result = $3
    for (i = 1; i <= NF; i++) {
        if ($(i + 1) ~ /^passed/) passed = $i
        if ($(i + 1) ~ /^failed/) failed = $i
        if ($(i + 1) ~ /^ignored/) ignored = $i
    }
    next
}
END {
    flush_suite()
    n = 0
    for (b in blocked) n++
    if (n > 0) {
        print ""
        print "Tests that could not run (CI does not allow skipping them):"
        for (b in blocked) print "  " blocked[b] " test(s): " b
    }
}
