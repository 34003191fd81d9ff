package config

import (
	"net/url"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Webhook is a webhook block: where ferry server posts what happened, as
// JSON signed with the block's secret.
type Webhook struct {
	Name string
	// URL is where the events go, http or https.
	URL string
	// Secret is the key of each body's HMAC-SHA256 signature; never shown.
	Secret string
	// Events are the events posted; all of WebhookEvents when empty.
	Events []string

	DeclRange hcl.Range
}

// WebhookEvents are the events a webhook can be sent.
var WebhookEvents = []string{"session.ended", "vm.failed", "rpo.breached", "rpo.recovered", "test.passed", "test.failed"}

// Wants reports whether w is sent event.
func (w *Webhook) Wants(event string) bool {
	return len(w.Events) == 0 || slices.Contains(w.Events, event)
}

var webhookSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "url", Required: true},
	{Name: "secret", Required: true},
	{Name: "events"},
}}

// decodeWebhook decodes a webhook block; ok is false after a problem, and
// the webhook is then left out of the configuration.
func (l *loader) decodeWebhook(b *hcl.Block) (*Webhook, bool) {
	w := &Webhook{Name: b.Labels[0], DeclRange: b.DefRange}
	content, diags := b.Body.Content(webhookSchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	attrs := content.Attributes
	if a, present := attrs["secret"]; present {
		l.cfg.sensitive = append(l.cfg.sensitive, a.Expr.Range())
		s, good := evalString(a, l.ctx, &l.diags)
		switch {
		case !good:
			ok = false
		case len(s) < 16:
			l.errorf(a.Expr.Range(), "Invalid webhook secret", "Webhook %q: the secret signs every body and must be at least 16 characters; read it from the environment with env(\"NAME\").", w.Name)
			ok = false
		default:
			w.Secret = s
		}
	}
	if a, present := attrs["url"]; present {
		s, good := evalString(a, l.ctx, &l.diags)
		u, err := url.Parse(s)
		switch {
		case !good:
			ok = false
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			l.errorf(a.Expr.Range(), "Invalid webhook URL", "Webhook %q: %q is not an http or https URL with a host.", w.Name, s)
			ok = false
		default:
			w.URL = s
		}
	}
	if a, present := attrs["events"]; present {
		events, good := evalStringList(a, l.ctx, &l.diags)
		ok = ok && good
		for _, e := range events {
			if !slices.Contains(WebhookEvents, e.Value) {
				l.errorf(e.Range, "Unknown webhook event", "Webhook %q: no event %q; the events are %s.", w.Name, e.Value, strings.Join(WebhookEvents, ", "))
				ok = false
				continue
			}
			w.Events = append(w.Events, e.Value)
		}
	}
	return w, ok
}
