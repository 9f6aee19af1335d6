/* SPDX-License-Identifier: MIT */
/*
 * The progress bar of `--follow` (see progress.h). The terminal's width
 * comes from TIOCGWINSZ (COLUMNS, 80 otherwise); the bar takes what the
 * text leaves.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "util/util.h"

#define PLAIN_STEP_PCT 10
#define MIN_BAR 10

struct progress {
	FILE *out;
	bool tty;
	bool drawn;        /* a bar is on the current line */
	char *last_label;  /* plain mode: label of the last line */
	char *last_bar;    /* tty mode: the line drawn last (not drawn again) */
	int last_step;     /* plain mode: last percent step printed */
};

struct progress *progress_new(FILE *out, bool tty)
{
	struct progress *p = xnew(struct progress);

	p->out = out;
	p->tty = tty;
	p->last_step = -1;
	return p;
}

struct progress *progress_free(struct progress *p)
{
	if (!p)
		return NULL;
	progress_done(p);
	free(p->last_label);
	free(p->last_bar);
	free(p);
	return NULL;
}

static int columns(const struct progress *p)
{
	struct winsize ws;
	const char *env = getenv("COLUMNS");

	if (ioctl(fileno(p->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
		return ws.ws_col;
	if (env && atoi(env) > 20)
		return atoi(env);
	return 80;
}

/* "45%  12.3 KiB/s  ETA 12s" (or units/s when not bytes). */
static void stats_text(double done, double total, double rate, bool bytes, char *buf,
		       size_t size)
{
	char r[32] = "", eta[32] = "";
	int pct = total > 0 ? (int)(done * 100 / total) : 0;

	if (rate > 0 && bytes) {
		cli_size(rate, r, sizeof(r));
		strcat(r, "/s");
	} else if (rate > 0) {
		snprintf(r, sizeof(r), "%.1f/min", rate * 60);
	}
	if (rate > 0 && total > done) {
		strcpy(eta, "ETA ");
		cli_duration((total - done) / rate, eta + 4, sizeof(eta) - 4);
	}
	snprintf(buf, size, "%3d%%%s%s%s%s", pct > 100 ? 100 : pct, r[0] ? "  " : "", r,
		 eta[0] ? "  " : "", eta);
}

static void draw(struct progress *p, const char *label, double done, double total,
		 const char *stats)
{
	int width = columns(p) - 1 - (int)strlen(label) - (int)strlen(stats) - 4;
	char *line;
	int fill;

	if (width < MIN_BAR)
		width = MIN_BAR;
	if (width > 60)
		width = 60;
	fill = total > 0 ? (int)(done * width / total) : 0;
	if (fill > width)
		fill = width;
	line = xasprintf("%s [%*s%*s] %s", label, fill, "", width - fill, "", stats);
	for (int i = 0; i < width; i++)
		line[strlen(label) + 2 + (size_t)i] = i < fill ? '#' : '-';
	if (p->drawn && p->last_bar && strcmp(line, p->last_bar) == 0) {
		free(line); /* nothing moved */
		return;
	}
	fprintf(p->out, "\r\033[K%s", line);
	fflush(p->out);
	free(p->last_bar);
	p->last_bar = line;
	p->drawn = true;
}

void progress_update(struct progress *p, const char *label, double done, double total,
		     double rate, bool bytes)
{
	char stats[96];
	int step = total > 0 ? (int)(done * 100 / total) / PLAIN_STEP_PCT : 0;

	stats_text(done, total, rate, bytes, stats, sizeof(stats));
	if (p->tty) {
		draw(p, label, done, total, stats);
		return;
	}
	if (p->last_label && strcmp(p->last_label, label) == 0 && step == p->last_step)
		return;
	if (bytes && total > 0) {
		char d[32], t[32];

		cli_size(done, d, sizeof(d));
		cli_size(total, t, sizeof(t));
		fprintf(p->out, "%s %s (%s of %s)\n", label, stats, d, t);
	} else {
		fprintf(p->out, "%s %s\n", label, stats);
	}
	fflush(p->out);
	free(p->last_label);
	p->last_label = xstrdup(label);
	p->last_step = step;
}

void progress_line(struct progress *p, const char *fmt, ...)
{
	va_list ap;

	if (p->drawn)
		fputs("\r\033[K", p->out);
	p->drawn = false;
	va_start(ap, fmt);
	vfprintf(p->out, fmt, ap);
	va_end(ap);
	fputc('\n', p->out);
	fflush(p->out);
}

void progress_done(struct progress *p)
{
	if (p->drawn)
		fputc('\n', p->out);
	p->drawn = false;
	fflush(p->out);
}
