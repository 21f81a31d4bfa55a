package versori

import (
	"encoding/json"
	"time"
)

// Connector is the API's Connector object, as returned by an import. Fields
// the API may add later are ignored. The polymorphic parts are kept as raw
// JSON: this project records them, it does not interpret them.
type Connector struct {
	ID             string `json:"id"`
	OrganisationID string `json:"organisationId"`
	Name           string `json:"name"`
	Public         bool   `json:"public"`
	// Protocol is "http" (BaseURL set) or "bigquery" (DatasetID set).
	Protocol  string `json:"protocol"`
	BaseURL   string `json:"baseUrl,omitempty"`
	DatasetID string `json:"datasetId,omitempty"`

	AuthSchemeConfigs   json.RawMessage `json:"authSchemeConfigs,omitempty"`
	Connections         json.RawMessage `json:"connections,omitempty"`
	ConnectionVariables json.RawMessage `json:"connectionVariables,omitempty"`

	Versions         []ConnectorVersion  `json:"versions"`
	DocumentationURL string              `json:"documentationURL,omitempty"`
	ImageURL         string              `json:"imageURL,omitempty"`
	Tags             map[string][]string `json:"tags,omitempty"`
	CreatedAt        time.Time           `json:"createdAt"`
	UpdatedAt        time.Time           `json:"updatedAt"`

	// RateLimit is what the import response's rate-limit headers said
	// (Remaining -1 when nothing), set by ImportPublicConnectorVersion so a
	// caller can pace itself to the server's real limit; other calls leave
	// it zero. It is not part of the API's object and is never encoded.
	RateLimit RateLimit `json:"-"`
}

// ConnectorVersion is one version of a connector. An imported copy is a
// draft: PublishedAt is nil.
type ConnectorVersion struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	IsLatest    bool       `json:"isLatest"`
	IsDefault   bool       `json:"isDefault"`
	CreatedAt   time.Time  `json:"createdAt"`
	UpdatedAt   time.Time  `json:"updatedAt"`
	PublishedAt *time.Time `json:"publishedAt"`
	Messages    []Message  `json:"messages,omitempty"`
}

// Message is a note attached to a connector version.
type Message struct {
	Text string `json:"text"`
	// Severity is "info", "warning" or "error".
	Severity string `json:"severity"`
	// Detail is kept raw: its item type is not documented.
	Detail json.RawMessage `json:"detail,omitempty"`
}

// PageOptions selects a page of a paginated list. First is the page size
// (0 leaves it to the server); After and Before are cursors from a previous
// page's Next and Prev.
type PageOptions struct {
	First  int
	After  string
	Before string
}

// ConnectorPage is one page of the public catalogue. The name of the list
// field is not documented; "items" is assumed, and TotalCount, Next and Prev
// are as documented.
type ConnectorPage struct {
	Items      []Connector `json:"items"`
	TotalCount int         `json:"totalCount"`
	Next       string      `json:"next,omitempty"`
	Prev       string      `json:"prev,omitempty"`
}

// ConnectorVersionPage is one page of the versions an organisation holds.
type ConnectorVersionPage struct {
	Items      []ConnectorVersion `json:"items"`
	TotalCount int                `json:"totalCount"`
	Next       string             `json:"next,omitempty"`
	Prev       string             `json:"prev,omitempty"`
}
