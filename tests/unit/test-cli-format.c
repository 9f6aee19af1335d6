/* SPDX-License-Identifier: MIT */
/*
 * The smpgw client's pure parts: the event-stream parser (src/cli/sse.c)
 * fed whole and byte by byte, with every line ending, comments, multi-line
 * data, the stop request and the size limits; and the text formats
 * (src/cli/format.c): natural order, ages, sizes, durations.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/format.h"
#include "cli/sse.h"
#include "tap.h"
#include "util/util.h"

struct got {
	char log[1024];
	int events;
	int stop_after; /* 0: never */
};

static int on_event(const char *type, const char *id, const char *data, void *ud)
{
	struct got *g = ud;
	size_t n = strlen(g->log);

	snprintf(g->log + n, sizeof(g->log) - n, "[%s|%s|%s]", type, id ? id : "-", data);
	g->events++;
	return g->stop_after && g->events >= g->stop_after;
}

/* The events of stream fed in pieces of chunk bytes (0: whole). */
static const char *parse(const char *stream, size_t chunk, struct got *g, int *ret)
{
	struct sse *s = sse_new(on_event, g);
	size_t len = strlen(stream);
	int r = 0;

	for (size_t off = 0; off < len && !r; off += chunk ? chunk : len)
		r = sse_feed(s, stream + off, chunk && len - off > chunk ? chunk : len - off);
	sse_free(s);
	if (ret)
		*ret = r;
	return g->log;
}

static void test_sse(void)
{
	static const char stream[] =
		": keepalive\n"
		"id: 42\nevent: device.connected\ndata: {\"id\":42}\n\n"
		"data: one\r\ndata: two\r\n\r\n"
		"data:no-space\rretry: 100\runknown: x\r\r"
		"event: empty\n\n"
		"data\n\n"
		"id: 7\ndata:  two spaces\n\n";
	static const char want[] =
		"[device.connected|42|{\"id\":42}][message|-|one\ntwo][message|-|no-space]"
		"[message|-|][message|7| two spaces]";

	for (size_t chunk = 0; chunk <= 7; chunk++) {
		struct got g = { 0 };
		int r;

		is_str(parse(stream, chunk, &g, &r), want, chunk ? "in small pieces" : "whole");
		is_int(r, 0, "no error");
	}
	{
		struct got g = { .stop_after = 1 };
		int r;

		parse("data: a\n\ndata: b\n\n", 0, &g, &r);
		is_int(r, 1, "the callback stops the stream");
		is_int(g.events, 1, "no event after the stop");
	}
	{
		struct got g = { 0 };
		int r;

		is_str(parse("data: unfinished\n", 0, &g, &r), "", "no event without its blank line");
	}
	{
		size_t big = SSE_MAX_LINE + 10;
		char *line = xmalloc(big + 1);
		struct got g = { 0 };
		struct sse *s = sse_new(on_event, &g);
		int r = 0;

		memset(line, 'x', big);
		line[big] = '\0';
		for (size_t off = 0; off < big && !r; off += 4096)
			r = sse_feed(s, line + off, big - off < 4096 ? big - off : 4096);
		is_int(r, -EMSGSIZE, "a line over the limit: -EMSGSIZE");
		sse_free(s);
		free(line);
	}
}

static int cmp(const void *a, const void *b)
{
	return cli_natcmp(*(const char *const *)a, *(const char *const *)b);
}

static void test_format(void)
{
	const char *names[] = { "PineTime-10", "pinetime-3", "PineTime-2", "PineTime-1",
				"PineTime-02b", "A", "PineTime-", "PineTime-100" };
	char buf[64], joined[256] = "";

	qsort(names, ARRAY_SIZE(names), sizeof(names[0]), cmp);
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s ", names[i]);
	is_str(joined, "A PineTime- PineTime-1 PineTime-2 PineTime-02b pinetime-3 PineTime-10 "
	       "PineTime-100 ", "natural order");
	is_int(cli_natcmp("w007", "w7"), 0, "leading zeros do not count");

	cli_age_at(0, 5000, buf, sizeof(buf));
	is_str(buf, "-", "age of never");
	cli_age_at(1000, 4500, buf, sizeof(buf));
	is_str(buf, "3s ago", "seconds");
	cli_age_at(1000, 1000 + 300 * 1000, buf, sizeof(buf));
	is_str(buf, "5m ago", "minutes");
	cli_age_at(1000, 1000 + 5LL * 3600 * 1000, buf, sizeof(buf));
	is_str(buf, "5h ago", "hours");
	cli_age_at(1000, 1000 + 3LL * 86400 * 1000, buf, sizeof(buf));
	is_str(buf, "3d ago", "days");
	cli_age_at(9000, 1000, buf, sizeof(buf));
	is_str(buf, "0s ago", "a clock behind the watch's: not negative");

	cli_size(12, buf, sizeof(buf));
	is_str(buf, "12 B", "bytes");
	cli_size(100.6 * 1024, buf, sizeof(buf));
	is_str(buf, "100.6 KiB", "KiB");
	cli_size(1.5 * 1024 * 1024, buf, sizeof(buf));
	is_str(buf, "1.5 MiB", "MiB");
	cli_duration(12.4, buf, sizeof(buf));
	is_str(buf, "12s", "seconds");
	cli_duration(65, buf, sizeof(buf));
	is_str(buf, "1:05", "minutes");
	cli_duration(2 * 3600 + 3 * 60, buf, sizeof(buf));
	is_str(buf, "2h03m", "hours");
	cli_duration(-3, buf, sizeof(buf));
	is_str(buf, "0s", "never negative");
}

int main(void)
{
	test_sse();
	test_format();
	return tap_done();
}
