/* SPDX-License-Identifier: MIT */
/*
 * The event-stream parser of the smpgw client (see sse.h). One pending
 * line and one pending event are kept between feeds; both are bounded.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli/sse.h"
#include "util/util.h"

struct text {
	char *s;
	size_t len, cap;
};

struct sse {
	sse_event_fn cb;
	void *ud;
	struct text line, data, type, id;
	bool has_data, has_id;
	bool after_cr; /* the last byte was a CR: a following LF is part of it */
};

static void text_set(struct text *t, const char *p, size_t n)
{
	if (n + 1 > t->cap) {
		t->cap = n + 1 > 2 * t->cap ? n + 1 : 2 * t->cap;
		t->s = xrealloc(t->s, t->cap);
	}
	memcpy(t->s, p, n);
	t->s[n] = '\0';
	t->len = n;
}

static void text_add(struct text *t, const char *p, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		t->cap = t->len + n + 1 > 2 * t->cap ? t->len + n + 1 : 2 * t->cap;
		t->s = xrealloc(t->s, t->cap);
	}
	memcpy(t->s + t->len, p, n);
	t->len += n;
	t->s[t->len] = '\0';
}

struct sse *sse_new(sse_event_fn cb, void *user_data)
{
	struct sse *s = xnew(struct sse);

	s->cb = cb;
	s->ud = user_data;
	return s;
}

struct sse *sse_free(struct sse *s)
{
	if (!s)
		return NULL;
	free(s->line.s);
	free(s->data.s);
	free(s->type.s);
	free(s->id.s);
	free(s);
	return NULL;
}

/* The blank line: the event, if it has data, goes to the callback. */
static int dispatch(struct sse *s)
{
	int r = 0;

	if (s->has_data)
		r = s->cb(s->type.len ? s->type.s : "message", s->has_id ? s->id.s : NULL,
			  s->data.s, s->ud);
	s->has_data = false;
	s->has_id = false;
	s->data.len = 0;
	s->type.len = 0;
	return r ? 1 : 0;
}

/* One complete line (without its end). */
static int line(struct sse *s, const char *p, size_t n)
{
	const char *colon = memchr(p, ':', n);
	size_t klen = colon ? (size_t)(colon - p) : n;
	const char *v = colon ? colon + 1 : p + n;
	size_t vlen = (size_t)(p + n - v);

	if (!n)
		return dispatch(s);
	if (!klen)
		return 0; /* a comment */
	if (vlen && *v == ' ') {
		v++;
		vlen--;
	}
	if (klen == 4 && !memcmp(p, "data", 4)) {
		if (s->data.len + vlen + 1 > SSE_MAX_DATA)
			return -EMSGSIZE;
		if (s->has_data)
			text_add(&s->data, "\n", 1);
		else
			text_set(&s->data, "", 0);
		text_add(&s->data, v, vlen);
		s->has_data = true;
	} else if (klen == 5 && !memcmp(p, "event", 5)) {
		text_set(&s->type, v, vlen);
	} else if (klen == 2 && !memcmp(p, "id", 2) && !memchr(v, '\0', vlen)) {
		text_set(&s->id, v, vlen);
		s->has_id = true;
	}
	return 0; /* retry: and unknown fields */
}

/* Ends the pending line (buffered part + p[0..n)). */
static int finish_line(struct sse *s, const char *p, size_t n)
{
	int r;

	if (!s->line.len)
		return line(s, p, n);
	if (s->line.len + n > SSE_MAX_LINE)
		return -EMSGSIZE;
	text_add(&s->line, p, n);
	r = line(s, s->line.s, s->line.len);
	s->line.len = 0;
	return r;
}

int sse_feed(struct sse *s, const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len;
	int r;

	while (p < end) {
		const char *eol = p;

		if (s->after_cr && *p == '\n') {
			s->after_cr = false;
			p++;
			continue;
		}
		s->after_cr = false;
		while (eol < end && *eol != '\n' && *eol != '\r')
			eol++;
		if (eol == end) {
			if (s->line.len + (size_t)(end - p) > SSE_MAX_LINE)
				return -EMSGSIZE;
			text_add(&s->line, p, (size_t)(end - p));
			return 0;
		}
		s->after_cr = *eol == '\r';
		r = finish_line(s, p, (size_t)(eol - p));
		if (r)
			return r;
		p = eol + 1;
	}
	return 0;
}
