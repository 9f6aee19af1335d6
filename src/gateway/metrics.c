/* SPDX-License-Identifier: MIT */
/*
 * Metrics registry and Prometheus text rendering (see metrics.h). Families
 * and series are small arrays searched linearly: a gateway has a handful
 * of families and tens of label sets, and lookups are cheaper than the
 * frames they count.
 */
#include "gateway/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

struct series {
	char *labels;      /* "" for none */
	double value;      /* counter/gauge */
	uint64_t *buckets; /* histogram: cumulative at render, per bucket here */
	uint64_t count;
	double sum;
};

struct family {
	char *name;
	char *help;
	enum gw_metric_type type;
	double *bounds;
	size_t nbounds;
	struct series *series;
	size_t nseries;
};

struct collector {
	unsigned id;
	gw_metrics_collect_cb cb;
	void *user_data;
};

struct gw_metrics {
	struct family *fams;
	size_t nfams;
	struct collector *colls;
	size_t ncolls;
	unsigned next_coll;
};

static const double default_buckets[] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};
static const double rate_buckets[] = {
	1000, 2000, 5000, 10000, 20000, 30000, 50000, 75000, 100000, 200000,
};

static const struct known {
	const char *name;
	enum gw_metric_type type;
	const char *help;
} known[] = {
	{ GW_M_FRAMES, GW_METRIC_COUNTER, "SMP frames per transport and direction." },
	{ GW_M_BYTES, GW_METRIC_COUNTER, "SMP bytes per transport and direction." },
	{ GW_M_REQ_LATENCY, GW_METRIC_HISTOGRAM, "SMP request round-trip time." },
	{ GW_M_UPLOAD_BYTES, GW_METRIC_COUNTER, "Image bytes acknowledged by devices." },
	{ GW_M_UPLOAD_RATE, GW_METRIC_HISTOGRAM, "Throughput of finished image uploads." },
	{ GW_M_UPLOAD_LOSSES, GW_METRIC_COUNTER,
	  "Upload frames lost or unanswered (each shrinks what is in flight)." },
	{ GW_M_ERRORS, GW_METRIC_COUNTER, "Errors by kind." },
	{ GW_M_DEVICES, GW_METRIC_GAUGE, "Managed devices by link state." },
	{ GW_M_HTTP_REQS, GW_METRIC_COUNTER, "HTTP requests by method and status." },
	{ GW_M_HTTP_LATENCY, GW_METRIC_HISTOGRAM, "HTTP request handling time." },
	{ GW_M_SSE_CLIENTS, GW_METRIC_GAUGE, "Connected event-stream clients." },
	{ GW_M_IMAGES, GW_METRIC_GAUGE, "Images in the image store." },
	{ GW_M_DEV_INFO, GW_METRIC_GAUGE,
	  "Managed watch (always 1), with its name and firmware version." },
	{ GW_M_DEV_BATTERY, GW_METRIC_GAUGE, "Battery percent a watch advertises." },
	{ GW_M_DEV_RSSI, GW_METRIC_GAUGE, "Last RSSI of a watch (dBm)." },
	{ GW_M_DEV_SEEN, GW_METRIC_GAUGE,
	  "When a watch was last heard (advertising or SMP), Unix seconds." },
	{ GW_M_DEV_LINK, GW_METRIC_GAUGE,
	  "Link state of a watch: 1 for its current state, 0 for the others." },
	{ GW_M_DEV_IN_RANGE, GW_METRIC_GAUGE,
	  "1 while a watch is in range (advertising, connected, or heard within [ble] "
	  "presence_timeout), else 0." },
	{ GW_M_JOBS, GW_METRIC_GAUGE, "Update jobs known to the daemon, by state." },
	{ GW_M_ROLLOUT_DEVS, GW_METRIC_GAUGE,
	  "Devices of a rollout by outcome (unfinished rollouts and the last finished)." },
};

struct gw_metrics *gw_metrics_new(void)
{
	struct gw_metrics *m = xnew(struct gw_metrics);

	m->next_coll = 1;
	return m;
}

static void series_clear(struct series *s)
{
	free(s->labels);
	free(s->buckets);
}

struct gw_metrics *gw_metrics_free(struct gw_metrics *m)
{
	if (!m)
		return NULL;
	for (size_t i = 0; i < m->nfams; i++) {
		struct family *f = &m->fams[i];

		for (size_t j = 0; j < f->nseries; j++)
			series_clear(&f->series[j]);
		free(f->series);
		free(f->name);
		free(f->help);
		free(f->bounds);
	}
	free(m->fams);
	free(m->colls);
	free(m);
	return NULL;
}

static bool name_valid(const char *name)
{
	if (!name || !*name || (name[0] >= '0' && name[0] <= '9'))
		return false;
	for (const char *p = name; *p; p++) {
		char c = *p;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == ':'))
			return false;
	}
	return true;
}

static struct family *family_find(const struct gw_metrics *m, const char *name)
{
	for (size_t i = 0; i < m->nfams; i++)
		if (!strcmp(m->fams[i].name, name))
			return &m->fams[i];
	return NULL;
}

static struct family *family_add(struct gw_metrics *m, const char *name,
				 enum gw_metric_type type, const char *help,
				 const double *bounds, size_t nbounds)
{
	struct family *f;

	m->fams = xrealloc(m->fams, (m->nfams + 1) * sizeof(*m->fams));
	f = &m->fams[m->nfams++];
	memset(f, 0, sizeof(*f));
	f->name = xstrdup(name);
	f->help = xstrdup(help ? help : name);
	f->type = type;
	if (type == GW_METRIC_HISTOGRAM) {
		if (!bounds) {
			bool rate = !strcmp(name, GW_M_UPLOAD_RATE);

			bounds = rate ? rate_buckets : default_buckets;
			nbounds = rate ? ARRAY_SIZE(rate_buckets) :
					 ARRAY_SIZE(default_buckets);
		}
		f->bounds = xmemdup(bounds, nbounds * sizeof(*bounds));
		f->nbounds = nbounds;
	}
	return f;
}

int gw_metrics_define(struct gw_metrics *m, const char *name,
		      enum gw_metric_type type, const char *help,
		      const double *buckets, size_t nbuckets)
{
	struct family *f;

	if (!name_valid(name))
		return -EINVAL;
	for (size_t i = 1; buckets && i < nbuckets; i++)
		if (!(buckets[i] > buckets[i - 1]))
			return -EINVAL;
	f = family_find(m, name);
	if (f)
		return f->type == type ? 0 : -EEXIST;
	family_add(m, name, type, help, buckets, nbuckets);
	return 0;
}

/* Finds or creates the family; NULL when the name is invalid or used with
 * another type (a programming error we refuse quietly rather than crash). */
static struct family *family_get(struct gw_metrics *m, const char *name,
				 enum gw_metric_type type)
{
	struct family *f = family_find(m, name);

	if (f)
		return f->type == type ? f : NULL;
	if (!name_valid(name))
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(known); i++)
		if (!strcmp(known[i].name, name))
			return known[i].type == type ?
				       family_add(m, name, type, known[i].help, NULL, 0) :
				       NULL;
	return family_add(m, name, type, NULL, NULL, 0);
}

static struct series *series_find(const struct family *f, const char *labels)
{
	for (size_t i = 0; i < f->nseries; i++)
		if (!strcmp(f->series[i].labels, labels))
			return &f->series[i];
	return NULL;
}

static struct series *series_get(struct family *f, const char *labels)
{
	struct series *s;

	if (!labels)
		labels = "";
	s = series_find(f, labels);
	if (s)
		return s;
	f->series = xrealloc(f->series, (f->nseries + 1) * sizeof(*f->series));
	s = &f->series[f->nseries++];
	memset(s, 0, sizeof(*s));
	s->labels = xstrdup(labels);
	if (f->type == GW_METRIC_HISTOGRAM)
		s->buckets = xnew_array(uint64_t, f->nbounds);
	return s;
}

void gw_metrics_add(struct gw_metrics *m, const char *name,
		    const char *labels, double v)
{
	struct family *f;

	if (!m || !(v >= 0))
		return;
	f = family_get(m, name, GW_METRIC_COUNTER);
	if (f)
		series_get(f, labels)->value += v;
}

void gw_metrics_counter_set(struct gw_metrics *m, const char *name,
			    const char *labels, double v)
{
	struct family *f;

	if (!m || !(v >= 0))
		return;
	f = family_get(m, name, GW_METRIC_COUNTER);
	if (f)
		series_get(f, labels)->value = v;
}

void gw_metrics_set(struct gw_metrics *m, const char *name,
		    const char *labels, double v)
{
	struct family *f;

	if (!m)
		return;
	f = family_get(m, name, GW_METRIC_GAUGE);
	if (f)
		series_get(f, labels)->value = v;
}

void gw_metrics_reset(struct gw_metrics *m, const char *name)
{
	struct family *f = m ? family_find(m, name) : NULL;

	if (!f || f->type != GW_METRIC_GAUGE)
		return;
	for (size_t i = 0; i < f->nseries; i++)
		series_clear(&f->series[i]);
	f->nseries = 0;
}

void gw_metrics_observe(struct gw_metrics *m, const char *name,
			const char *labels, double v)
{
	struct family *f;
	struct series *s;

	if (!m || isnan(v))
		return;
	f = family_get(m, name, GW_METRIC_HISTOGRAM);
	if (!f)
		return;
	s = series_get(f, labels);
	for (size_t i = 0; i < f->nbounds; i++) {
		if (v <= f->bounds[i]) {
			s->buckets[i]++;
			break;
		}
	}
	s->count++;
	s->sum += v;
}

double gw_metrics_get(const struct gw_metrics *m, const char *name,
		      const char *labels)
{
	const struct family *f = m ? family_find(m, name) : NULL;
	const struct series *s;

	if (!f)
		return 0;
	s = series_find(f, labels ? labels : "");
	if (!s)
		return 0;
	return f->type == GW_METRIC_HISTOGRAM ? (double)s->count : s->value;
}

unsigned gw_metrics_add_collector(struct gw_metrics *m,
				  gw_metrics_collect_cb cb, void *user_data)
{
	m->colls = xrealloc(m->colls, (m->ncolls + 1) * sizeof(*m->colls));
	m->colls[m->ncolls] = (struct collector){ m->next_coll++, cb, user_data };
	return m->colls[m->ncolls++].id;
}

void gw_metrics_remove_collector(struct gw_metrics *m, unsigned id)
{
	for (size_t i = 0; m && i < m->ncolls; i++) {
		if (m->colls[i].id == id) {
			memmove(&m->colls[i], &m->colls[i + 1],
				(m->ncolls - i - 1) * sizeof(*m->colls));
			m->ncolls--;
			return;
		}
	}
}

/* Growing string buffer for rendering. */
struct sbuf {
	char *s;
	size_t len, cap;
};

static void __attribute__((format(printf, 2, 3)))
sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < b->cap - b->len)
			break;
		b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 0) + 64;
		b->s = xrealloc(b->s, b->cap);
	}
	b->len += (size_t)n;
}

/* Prometheus floats: integers without exponent noise, +Inf/NaN spelled out. */
static void fmt_value(char *out, size_t size, double v)
{
	if (isnan(v))
		snprintf(out, size, "NaN");
	else if (isinf(v))
		snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
	else if (v > -1e15 && v < 1e15 && v == (double)(long long)v)
		snprintf(out, size, "%.0f", v);
	else
		snprintf(out, size, "%.9g", v);
}

static void render_sample(struct sbuf *b, const char *name, const char *suffix,
			  const char *labels, const char *extra, double v)
{
	char val[64];
	bool any = labels[0] || extra;

	fmt_value(val, sizeof(val), v);
	sb_printf(b, "%s%s%s%s%s%s%s %s\n", name, suffix, any ? "{" : "",
		  labels, labels[0] && extra ? "," : "", extra ? extra : "",
		  any ? "}" : "", val);
}

static void render_histogram(struct sbuf *b, const struct family *f,
			     const struct series *s)
{
	uint64_t cum = 0;
	char le[80], val[64];

	for (size_t i = 0; i < f->nbounds; i++) {
		cum += s->buckets[i];
		fmt_value(val, sizeof(val), f->bounds[i]);
		snprintf(le, sizeof(le), "le=\"%s\"", val);
		render_sample(b, f->name, "_bucket", s->labels, le, (double)cum);
	}
	render_sample(b, f->name, "_bucket", s->labels, "le=\"+Inf\"",
		      (double)s->count);
	render_sample(b, f->name, "_sum", s->labels, NULL, s->sum);
	render_sample(b, f->name, "_count", s->labels, NULL, (double)s->count);
}

static const char *type_name(enum gw_metric_type t)
{
	switch (t) {
	case GW_METRIC_COUNTER:
		return "counter";
	case GW_METRIC_GAUGE:
		return "gauge";
	case GW_METRIC_HISTOGRAM:
		return "histogram";
	}
	return "untyped";
}

char *gw_metrics_render(struct gw_metrics *m)
{
	struct sbuf b = { xmalloc(256), 0, 256 };

	b.s[0] = '\0';
	for (size_t i = 0; i < m->ncolls; i++)
		m->colls[i].cb(m, m->colls[i].user_data);
	for (size_t i = 0; i < m->nfams; i++) {
		const struct family *f = &m->fams[i];

		sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help,
			  f->name, type_name(f->type));
		for (size_t j = 0; j < f->nseries; j++) {
			if (f->type == GW_METRIC_HISTOGRAM)
				render_histogram(&b, f, &f->series[j]);
			else
				render_sample(&b, f->name, "", f->series[j].labels,
					      NULL, f->series[j].value);
		}
	}
	return b.s;
}

char *gw_metrics_label_escape(const char *value)
{
	size_t n = 0;
	char *out, *o;

	for (const char *p = value; *p; p++)
		n += (*p == '\\' || *p == '"' || *p == '\n') ? 2 : 1;
	out = o = xmalloc(n + 1);
	for (const char *p = value; *p; p++) {
		if (*p == '\\' || *p == '"') {
			*o++ = '\\';
			*o++ = *p;
		} else if (*p == '\n') {
			*o++ = '\\';
			*o++ = 'n';
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	return out;
}
