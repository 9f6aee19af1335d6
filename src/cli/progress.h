/* SPDX-License-Identifier: MIT */
/*
 * Progress output of `--follow`: on a terminal one line redrawn in place
 * (label, bar, percent, rate, ETA); otherwise plain lines, one per phase
 * change and per 10 % step, so logs and pipes stay readable.
 */
#pragma once

#include <stdbool.h>
#include <stdio.h>

struct progress;

/* tty: draw in place (callers pass isatty(fileno(out))). */
struct progress *progress_new(FILE *out, bool tty);
struct progress *progress_free(struct progress *p);

/* What stands where: label ("upload", "3/20 done"), done of total units
 * (bytes when bytes is true: sizes and a rate in B/s), rate in units per
 * second (<= 0: unknown, then no ETA). */
void progress_update(struct progress *p, const char *label, double done, double total,
		     double rate, bool bytes);
/* A line of its own (the bar, if drawn, is cleared first and redrawn by
 * the next update). */
void progress_line(struct progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Ends the bar's line (it stays as drawn last). */
void progress_done(struct progress *p);
