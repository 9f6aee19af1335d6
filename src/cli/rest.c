/* SPDX-License-Identifier: MIT */
/*
 * The REST client of the smpgw tool over libcurl's easy interface: builds
 * the URL from cli.url, adds the bearer token, collects the answer, and
 * turns transport errors and problem+json answers into one line each.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/rest.h"
#include "cli/sse.h"
#include "util/util.h"

#ifndef SMPGW_VERSION
#define SMPGW_VERSION "unknown"
#endif

#define CONNECT_TIMEOUT_S 10L
#define REQUEST_TIMEOUT_S 120L
#define MAX_ANSWER (64u << 20)

struct buf {
	char *data;
	size_t len;
	bool too_big;
};

/* What a streaming request keeps between write callbacks. */
struct stream {
	CURL *curl;
	struct sse *sse;
	struct buf error; /* the body of an error answer */
	int feed;         /* sse_feed's last result: 1 stopped, <0 broken stream */
	long status;
};

void rest_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

void rest_cleanup(void)
{
	curl_global_cleanup();
}

static void buf_add(struct buf *b, const char *p, size_t n)
{
	if (b->len + n > MAX_ANSWER) {
		b->too_big = true;
		return;
	}
	b->data = xrealloc(b->data, b->len + n + 1);
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
	buf_add(ud, p, size * n);
	return size * n;
}

char *rest_escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0);
	char *r = xstrdup(e ? e : "");

	curl_free(e);
	return r;
}

static struct curl_slist *headers(const char *accept, const char *content_type)
{
	struct curl_slist *h = NULL;
	char *line = xasprintf("Accept: %s", accept);

	h = curl_slist_append(h, line);
	free(line);
	if (content_type) {
		line = xasprintf("Content-Type: %s", content_type);
		h = curl_slist_append(h, line);
		free(line);
	}
	if (cli.token) {
		line = xasprintf("Authorization: Bearer %s", cli.token);
		h = curl_slist_append(h, line);
		free(line);
	}
	return h;
}

static CURL *easy(const char *method, const char *path, char *errbuf)
{
	CURL *c = curl_easy_init();
	char *url = xasprintf("%s%s", cli.url, path);

	if (!c)
		abort();
	curl_easy_setopt(c, CURLOPT_URL, url);
	free(url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "smpgw/" SMPGW_VERSION);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	if (cli.cacert)
		curl_easy_setopt(c, CURLOPT_CAINFO, cli.cacert);
	errbuf[0] = '\0';
	return c;
}

static bool quiet;
static char last_error[CURL_ERROR_SIZE + 256];

void rest_set_quiet(bool q)
{
	quiet = q;
}

const char *rest_last_error(void)
{
	return last_error;
}

/* One line for a transport failure; the exit status. */
static int transport_error(CURLcode rc, const char *errbuf)
{
	const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);

	if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL) {
		fprintf(stderr, "smpgw: bad URL '%s': %s\n", cli.url, why);
		return EXIT_USAGE;
	}
	snprintf(last_error, sizeof(last_error), "cannot reach smpgwd at %s: %s%s", cli.url, why,
		 rc == CURLE_COULDNT_CONNECT ? " (is it running? SMPGW_URL or --url say where)" :
		 "");
	if (!quiet)
		fprintf(stderr, "smpgw: %s\n", last_error);
	return EXIT_UNREACHABLE;
}

/* One line for an error answer: the problem's status, title and detail
 * (and the SMP error a watch answered with); the exit status. */
static int problem_error(long status, const char *method, const char *path, const struct buf *b)
{
	json_t *j = b->data ? json_loadb(b->data, b->len, 0, NULL) : NULL;
	const char *title = json_string_value(json_object_get(j, "title"));
	const char *detail = json_string_value(json_object_get(j, "detail"));
	json_t *smp = json_object_get(j, "smp");

	if (title || detail) {
		fprintf(stderr, "smpgw: %s%s%s", title ? title : "", title && detail ? ": " : "",
			detail ? detail : "");
		if (json_is_object(smp))
			fprintf(stderr, " (SMP rc %lld %s)",
				(long long)json_integer_value(json_object_get(smp, "rc")),
				json_string_value(json_object_get(smp, "rc_name")) ?
					json_string_value(json_object_get(smp, "rc_name")) : "");
		fprintf(stderr, " [HTTP %ld]\n", status);
	} else {
		fprintf(stderr, "smpgw: %s %s: HTTP %ld from smpgwd at %s\n", method, path, status,
			cli.url);
	}
	json_decref(j);
	return EXIT_REFUSED;
}

/* Runs c; on success *ret gets the 2xx body. 0 or the exit status. */
static int perform(CURL *c, const char *method, const char *path, const char *errbuf,
		   struct buf *out, long *status)
{
	CURLcode rc;
	long st = 0;

	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
	/* A refusal can arrive while the body is still going out: the answer
	 * is what the user needs, not the broken pipe that followed it. */
	if (rc != CURLE_OK && !(rc == CURLE_SEND_ERROR && st >= 400))
		return transport_error(rc, errbuf);
	if (status)
		*status = st;
	if (out->too_big) {
		fprintf(stderr, "smpgw: %s %s: answer larger than %u bytes\n", method, path,
			MAX_ANSWER);
		return EXIT_REFUSED;
	}
	if (st < 200 || st > 299)
		return problem_error(st, method, path, out);
	return 0;
}

static json_t *decode(const char *method, const char *path, struct buf *b, int *code)
{
	json_error_t e;
	json_t *j;

	if (!b->len)
		return json_null();
	j = json_loadb(b->data, b->len, JSON_DECODE_ANY, &e);
	if (!j) {
		fprintf(stderr, "smpgw: %s %s: the answer is not JSON: %s\n", method, path, e.text);
		*code = EXIT_REFUSED;
	}
	return j;
}

json_t *rest_json(const char *method, const char *path, const json_t *body, long *status,
		  int *code)
{
	char errbuf[CURL_ERROR_SIZE];
	CURL *c = easy(method, path, errbuf);
	struct curl_slist *h = headers("application/json", body ? "application/json" : NULL);
	struct buf out = { 0 };
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_t *j = NULL;

	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
	if (text)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
	else if (strcmp(method, "POST") == 0)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
	*code = perform(c, method, path, errbuf, &out, status);
	if (!*code)
		j = decode(method, path, &out, code);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	free(text);
	free(out.data);
	return j;
}

char *rest_text(const char *path, int *code)
{
	char errbuf[CURL_ERROR_SIZE];
	CURL *c = easy("GET", path, errbuf);
	struct curl_slist *h = headers("text/plain, application/json", NULL);
	struct buf out = { 0 };

	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
	*code = perform(c, "GET", path, errbuf, &out, NULL);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	if (*code) {
		free(out.data);
		return NULL;
	}
	return out.data ? out.data : xstrdup("");
}

json_t *rest_upload(const char *path, const char *file, long *status, int *code)
{
	char errbuf[CURL_ERROR_SIZE];
	FILE *f = fopen(file, "rb");
	struct buf out = { 0 };
	struct curl_slist *h;
	json_t *j = NULL;
	struct stat st;
	CURL *c;

	if (!f || fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "smpgw: %s: %s\n", file, f ? "not a regular file" : strerror(errno));
		if (f)
			fclose(f);
		*code = EXIT_FAILED;
		return NULL;
	}
	c = easy("POST", path, errbuf);
	h = headers("application/json", "application/octet-stream");
	/* Ask before sending the body: smpgwd answers a refused upload (401,
	 * 413, 415) at once and closes, and without the wait curl would still
	 * be writing the image and report a broken pipe instead of the answer. */
	h = curl_slist_append(h, "Expect: 100-continue");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_READDATA, f);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)st.st_size);
	/* No total limit for a large image on a slow link; give up when
	 * nothing moves for a minute. */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	*code = perform(c, "POST", path, errbuf, &out, status);
	if (!*code)
		j = decode("POST", path, &out, code);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	fclose(f);
	free(out.data);
	return j;
}

static size_t stream_write(char *p, size_t size, size_t n, void *ud)
{
	struct stream *s = ud;

	if (!s->status)
		curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
	if (s->status < 200 || s->status > 299) {
		buf_add(&s->error, p, size * n);
		return size * n;
	}
	s->feed = sse_feed(s->sse, p, size * n);
	return s->feed ? 0 : size * n; /* 0: curl stops with CURLE_WRITE_ERROR */
}

static int stream_error(const char *path)
{
	fprintf(stderr, "smpgw: GET %s: not an event stream (a line or an event over "
		"the size limit)\n", path);
	return EXIT_REFUSED;
}

int rest_stream(const char *path, long timeout_ms, sse_event_fn event_cb, void *ud)
{
	char errbuf[CURL_ERROR_SIZE];
	struct stream s = { .sse = sse_new(event_cb, ud) };
	struct curl_slist *h = headers("text/event-stream", NULL);
	CURLcode rc;
	int code = 0;

	s.curl = easy("GET", path, errbuf);
	curl_easy_setopt(s.curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(s.curl, CURLOPT_WRITEFUNCTION, stream_write);
	curl_easy_setopt(s.curl, CURLOPT_WRITEDATA, &s);
	if (timeout_ms > 0)
		curl_easy_setopt(s.curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	rc = curl_easy_perform(s.curl);
	if (s.status && (s.status < 200 || s.status > 299))
		code = problem_error(s.status, "GET", path, &s.error);
	else if (rc == CURLE_WRITE_ERROR && s.feed > 0)
		code = 0;
	else if (rc == CURLE_WRITE_ERROR && s.feed < 0)
		code = stream_error(path);
	else if (rc == CURLE_OPERATION_TIMEDOUT && timeout_ms > 0 && s.status)
		code = 0;
	else if (rc != CURLE_OK)
		code = transport_error(rc, errbuf);
	curl_easy_cleanup(s.curl);
	curl_slist_free_all(h);
	sse_free(s.sse);
	free(s.error.data);
	return code;
}
